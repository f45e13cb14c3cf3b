"""The llama.cpp adapter as an engine of the conformance suite (:mod:`autodeco_samplers.conformance`).

Registered as ``ENGINE_MODULES["llama-cpp"]`` in :mod:`autodeco_samplers.conformance.engines`. Levels:

* ``kernel``: the adapter's per-step code (:func:`step_distribution`) on the given hidden
  states and logits, row by row;
* ``sampling``: draws of the adapter's real per-token sampler (:func:`draw_step`), seeded;
* ``end-to-end``: a seeded tiny Llama converted to GGUF by this project's converter, run by
  real llama.cpp (f32 KV cache) through :class:`AutoDecoLlama`; per step the engine's logits,
  its distribution and T/P, and, as the heads' reference, NumPy heads on a teacher-forced
  transformers forward of the same token path (needs torch + transformers).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from autodeco_samplers.conformance.engines import ConformanceEngine
from autodeco_samplers.core.interfaces import NumpyStep
from autodeco_samplers.heads import load_heads
from autodeco_samplers.core.reference import inverse_cdf

from autodeco_samplers.adapters.llama_cpp import ENGINE_NAME, AutoDecoLlama, draw_step, step_distribution

__all__ = ["LlamaCppEngine", "record_path"]


def record_path(gen: AutoDecoLlama, prompt_ids, steps: int, seed: int, *, stop_at_eog: bool = False):
    """Sample up to ``steps`` tokens after ``prompt_ids`` with ``gen``'s own step (seeded draw,
    one uniform per token) and keep, per step, the engine's logits and hidden state (copies),
    the canonical distribution (dense), and the predicted / used T and P: ``(path, records)``,
    each record with ``logits``/``hidden``/``probs`` ``[1, ...]`` and ``T_pred``, ``P_pred``,
    ``T``, ``P``. ``stop_at_eog`` ends the path at an end-of-generation token."""
    rng = np.random.default_rng(seed)
    gen._reset()
    gen._prefill(list(prompt_ids))
    records, path = [], []
    try:
        for _ in range(steps):
            hidden, logits = (a.copy() for a in gen.last_outputs())
            (T_pred, P_pred, T, P), (ids, p) = gen.step_distribution(hidden, logits)
            dense = np.zeros(gen.n_vocab)
            dense[ids] = p
            token = int(ids[inverse_cdf(p[None], rng.random())[0]])
            records.append({"logits": logits[None], "hidden": hidden[None], "probs": dense[None],
                            "T_pred": T_pred, "P_pred": P_pred, "T": T, "P": P})
            path.append(token)
            if stop_at_eog and gen.is_eog(token):
                break
            gen._decode([token])
    finally:
        gen._llama_cpp.llama_set_embeddings(gen._ctx, False)
    return path, records


class LlamaCppEngine(ConformanceEngine):
    name = ENGINE_NAME

    def availability(self):
        try:
            import gguf  # noqa: F401
            import llama_cpp  # noqa: F401
        except ImportError as exc:
            return False, f"llama-cpp-python / gguf not installed ({exc})"
        return True, ""

    def kernel(self, hidden, logits, heads, policy):
        hidden = np.atleast_2d(np.asarray(hidden, np.float32))
        logits = np.atleast_2d(np.asarray(logits, np.float32))
        probs = np.zeros(logits.shape, np.float64)
        rows = []
        for b in range(logits.shape[0]):
            vals, (ids, p) = step_distribution(heads, policy, hidden[b], logits[b])
            probs[b, ids] = p
            rows.append([float(v[0]) for v in vals])
        T_pred, P_pred, T, P = (np.array(c) for c in zip(*rows))
        return NumpyStep(T_pred, P_pred, T, P, probs=probs)

    def draw(self, hidden, logits, heads, policy, n, seed):
        rng = np.random.default_rng(seed)
        h = np.asarray(hidden, np.float32)[0]
        lg = np.asarray(logits, np.float32)[0]
        return np.array([draw_step(heads, policy, h, lg, rng).token_id for _ in range(n)])

    def end_to_end(self, workdir, steps: int, seed: int):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from autodeco_samplers.models.gguf_convert import convert_llama_to_gguf
        from autodeco_samplers.models.tiny_models import save_tiny_heads, save_tiny_model

        work = Path(workdir)
        model_dir = save_tiny_model(work / "model", "llama", seed=seed)
        heads = load_heads(save_tiny_heads(work / "heads", 64, seed=seed + 1))
        gguf_path = convert_llama_to_gguf(model_dir, work / "model.gguf")
        gen = AutoDecoLlama(gguf_path, heads, f32_kv_cache=True, n_ctx=256, n_threads=2)
        prompt = AutoTokenizer.from_pretrained(model_dir).encode("The quick brown fox")
        path, recs = record_path(gen, prompt, steps, seed)
        model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
        with torch.no_grad():
            out = model(torch.tensor([prompt + path]), output_hidden_states=True)
        for s, rec in enumerate(recs):
            t = len(prompt) + s - 1
            h = out.hidden_states[-1][:, t].float().numpy()
            lg = out.logits[:, t].float().numpy()
            rec["ref_T_pred"], rec["ref_P_pred"] = heads.predict(h, lg)
        return recs

