"""The llama.cpp adapter as an engine of the conformance suite (:mod:`autodeco_samplers.conformance`).

Registered as ``ENGINE_MODULES["llama-cpp"]`` in :mod:`autodeco_samplers.conformance.engines`. Only
public API. Levels:

* ``kernel``: the adapter's per-step code, the core NumPy step
  (:func:`~autodeco_samplers.core.step.numpy_step_distribution`), on the given hidden states and
  logits one row at a time, as the adapter runs it;
* ``sampling``: draws of the adapter's per-token sampler
  (:func:`~autodeco_samplers.core.step.numpy_step_sample`), seeded;
* ``end-to-end``: a seeded tiny Llama converted to GGUF by this project's converter, run by
  real llama.cpp (f32 KV cache) through :class:`AutoDecoLlama`, whose ``on_step`` hook reports
  per step the engine's logits and hidden state, its distribution and T/P; as the heads'
  reference, NumPy heads on a teacher-forced transformers forward of the same token path
  (needs torch + transformers).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

from autodeco_samplers.adapters.llama_cpp import ENGINE_NAME, AutoDecoLlama, StepRecord
from autodeco_samplers.conformance.engines import ConformanceEngine
from autodeco_samplers.core.interfaces import NumpyStep
from autodeco_samplers.core.step import numpy_step_distribution, numpy_step_sample
from autodeco_samplers.heads import load_heads

__all__ = ["LlamaCppEngine", "record_path"]


def record_path(gen: AutoDecoLlama, prompt_ids: Sequence[int], steps: int, seed: int, *,
                stop_at_eog: bool = False) -> Tuple[List[int], List[Dict[str, np.ndarray]]]:
    """Generate up to ``steps`` tokens after ``prompt_ids`` with ``gen`` (seeded, the
    deployment policy) and keep, per step, what the adapter's ``on_step`` hook reports:
    ``(path, records)``, each record with ``logits``/``hidden``/``probs`` (dense) ``[1, ...]``
    and ``T_pred``, ``P_pred``, ``T``, ``P`` ``[1]``. ``stop_at_eog`` ends the path at an
    end-of-generation token."""
    records: List[Dict[str, np.ndarray]] = []

    def keep(rec: StepRecord) -> None:
        st = rec.step
        records.append({"logits": rec.logits[None], "hidden": rec.hidden[None], "probs": st.dense(gen.n_vocab),
                        "T_pred": st.T_pred, "P_pred": st.P_pred, "T": st.T, "P": st.P})

    result = gen.generate(list(prompt_ids), max_new_tokens=steps, seed=seed, stop_at_eos=stop_at_eog, on_step=keep)
    return list(result.token_ids), records


class LlamaCppEngine(ConformanceEngine):
    name = ENGINE_NAME
    requires = ("gguf", "llama_cpp")
    missing_reason = "llama-cpp-python / gguf not installed ({exc})"

    def kernel(self, hidden, logits, heads, policy):
        hidden = np.atleast_2d(np.asarray(hidden, np.float32))
        logits = np.atleast_2d(np.asarray(logits, np.float32))
        rows = [numpy_step_distribution(hidden[b : b + 1], logits[b : b + 1], heads, policy) for b in range(len(logits))]
        T_pred, P_pred, T, P = (np.concatenate([getattr(st, f) for st in rows]) for f in ("T_pred", "P_pred", "T", "P"))
        probs = np.concatenate([st.dense(logits.shape[1]) for st in rows])
        return NumpyStep(T_pred, P_pred, T, P, probs=probs)

    def draw(self, hidden, logits, heads, policy, n, seed):
        rng = np.random.default_rng(seed)
        h = np.asarray(hidden, np.float32)[:1]
        lg = np.asarray(logits, np.float32)[:1]
        return np.array([int(numpy_step_sample(h, lg, heads, policy, rng).token_ids[0]) for _ in range(n)])

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
