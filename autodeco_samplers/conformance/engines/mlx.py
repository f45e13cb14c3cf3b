"""The MLX adapter as an engine of the conformance suite (:mod:`autodeco_samplers.conformance`).

Registered as ``ENGINE_MODULES["mlx"]`` in :mod:`autodeco_samplers.conformance.engines`;
skipped where ``mlx`` / ``mlx-lm`` are not installed. Only public API. Levels:

* ``kernel``: the adapter's sampler (:class:`~autodeco_samplers.adapters.mlx.sampler.AutoDecoSampler`)
  called by hand on each row as ``mx.array``s (the hidden state where the tap would keep it, the
  logits as mlx-lm hands them), its step read back through ``on_step``;
* ``sampling``: ``n`` draws of that sampler, seeded;
* ``end-to-end``: a seeded tiny Llama loaded by ``mlx_lm.load`` and run by mlx-lm's own
  ``generate_step`` with the attached sampler; per step the engine's log-probabilities (MLX's
  logits up to a per-row shift), its hidden state, distribution and T/P; as the heads'
  reference, NumPy heads on a teacher-forced transformers forward of the same token path
  (needs torch + transformers), so the tap's hidden state is checked independently.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import numpy as np

from autodeco_samplers.conformance.engines import ConformanceEngine
from autodeco_samplers.core.interfaces import NumpyStep
from autodeco_samplers.heads import load_heads

__all__ = ["MLXEngine"]


class _Row:
    """Stands where the tap keeps the hidden state (``.hidden``, an ``mx.array`` ``[1, H]``)."""

    def __init__(self, hidden) -> None:
        self.hidden = hidden


def _sampler(hidden_row: np.ndarray, heads, policy, seed: int = 0, on_step=None):
    import mlx.core as mx

    from autodeco_samplers.adapters.mlx.sampler import AutoDecoSampler

    return AutoDecoSampler(_Row(mx.array(np.asarray(hidden_row, np.float32))), heads, policy, seed=seed, on_step=on_step)


class MLXEngine(ConformanceEngine):
    name = "mlx"
    requires = ("mlx.core", "mlx_lm")
    missing_reason = "mlx / mlx-lm not installed (the `mlx` extra: {exc})"

    def kernel(self, hidden, logits, heads, policy):
        import mlx.core as mx

        hidden = np.atleast_2d(np.asarray(hidden, np.float32))
        logits = np.atleast_2d(np.asarray(logits, np.float32))
        steps: List[NumpyStep] = []
        for b in range(len(logits)):
            sampler = _sampler(hidden[b : b + 1], heads, policy, on_step=lambda h, lp, st: steps.append(st))
            sampler(mx.array(logits[b : b + 1]))
        T_pred, P_pred, T, P = (np.concatenate([getattr(st, f) for st in steps]) for f in ("T_pred", "P_pred", "T", "P"))
        probs = np.concatenate([st.dense(logits.shape[1]) for st in steps])
        return NumpyStep(T_pred, P_pred, T, P, probs=probs)

    def draw(self, hidden, logits, heads, policy, n, seed):
        import mlx.core as mx

        sampler = _sampler(np.asarray(hidden, np.float32)[:1], heads, policy, seed=seed)
        row = mx.array(np.asarray(logits, np.float32)[:1])
        return np.array([int(sampler(row)[0]) for _ in range(n)])

    def end_to_end(self, workdir, steps: int, seed: int) -> List[Dict[str, np.ndarray]]:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from autodeco_samplers.models.tiny_models import save_tiny_heads, save_tiny_model

        work = Path(workdir)
        model_dir = save_tiny_model(work / "model", "llama", seed=seed)
        heads = load_heads(save_tiny_heads(work / "heads", 64, seed=seed + 1))
        prompt = AutoTokenizer.from_pretrained(model_dir).encode("The quick brown fox")
        path, records = record_path(model_dir, heads, prompt, steps, seed)
        model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
        with torch.no_grad():
            out = model(torch.tensor([prompt + path]), output_hidden_states=True)
        for s, rec in enumerate(records):
            t = len(prompt) + s - 1
            rec["ref_hidden"] = out.hidden_states[-1][:, t].float().numpy()
            rec["ref_T_pred"], rec["ref_P_pred"] = heads.predict(rec["ref_hidden"], out.logits[:, t].float().numpy())
        return records


def record_path(model_dir, heads, prompt_ids, steps: int, seed: int):
    """Load ``model_dir`` with mlx-lm, attach ``heads`` and generate ``steps`` tokens after
    ``prompt_ids`` with mlx-lm's ``generate_step`` (seeded, default policy). Returns ``(path,
    records)``; each record has ``logits`` (the log-probabilities the sampler got), ``hidden``,
    ``probs`` (dense) ``[1, ...]`` and ``T_pred``, ``P_pred``, ``T``, ``P`` ``[1]``."""
    import mlx_lm

    from autodeco_samplers.adapters.mlx import attach, generate, rope_overrides

    model, tokenizer = mlx_lm.load(str(model_dir), model_config=rope_overrides(model_dir))
    records: List[Dict[str, np.ndarray]] = []

    def keep(hidden, logprobs, st) -> None:
        records.append({"logits": logprobs.copy(), "hidden": hidden.copy(), "probs": st.dense(logprobs.shape[1]),
                        "T_pred": st.T_pred, "P_pred": st.P_pred, "T": st.T, "P": st.P})

    autodeco = attach(model, heads, seed=seed, on_step=keep)
    result = generate(autodeco, tokenizer, list(prompt_ids), max_tokens=steps, seed=seed, stop_at_eos=False)
    autodeco.detach()
    return list(result.token_ids), records[: len(result.token_ids)]
