"""The transformers adapter as a conformance-suite engine (``TransformersEngine``).

Levels (see :mod:`autodeco_samplers.conformance.engines`):

* ``kernel``: the adapter's per-step code, :meth:`AutoDecoAttachment.step` (heads on the
  hidden state, policy, canonical nucleus returned as logits), fed the given hidden states and
  logits; the distribution is the softmax transformers' sampler takes of the returned logits.
* ``sampling``: draws by transformers' own rule (softmax + ``torch.multinomial``) from those
  logits, seeded.
* ``end-to-end``: tiny seeded models of every architecture a released AutoDeco checkpoint
  uses (Llama, Qwen2, Qwen3, Qwen3-MoE, GPT-OSS) and of Gemma2 (final-logit softcap), Cohere
  (``logit_scale``) and Granite (``logits_scaling``), with random heads, a left-padded batch,
  an ordinary ``model.generate(do_sample=True, logits_processor=[AutoDecoLogitsProcessor])``;
  per step the scores transformers sampled from, the trace's T and P, and, as reference for
  the heads, NumPy heads on a teacher-forced forward's ``output_hidden_states`` and the
  model's own (transformed) logits, so the adapter's ``_model_logits`` is checked too.

Register with ``ENGINE_MODULES["transformers"] = ("autodeco_samplers.conformance.engines.transformers",
"TransformersEngine")``.
"""

from __future__ import annotations

from pathlib import Path
from typing import List

import numpy as np

from autodeco_samplers.conformance.engines import ConformanceEngine
from autodeco_samplers.core.interfaces import NumpyStep

__all__ = ["TransformersEngine"]


class TransformersEngine(ConformanceEngine):
    name = "transformers"
    requires = ("torch", "transformers")
    missing_reason = "transformers/torch not installed ({exc})"

    def __init__(self, architectures=None) -> None:
        from autodeco_samplers.models.tiny_models import LOGIT_TRANSFORM_ARCHITECTURES, OFFICIAL_ARCHITECTURES

        self.architectures = tuple(architectures or OFFICIAL_ARCHITECTURES + LOGIT_TRANSFORM_ARCHITECTURES)

    def _logits(self, hidden, logits, heads, policy):
        import torch

        from transformers import PretrainedConfig

        from autodeco_samplers.adapters.transformers import AutoDecoAttachment
        from autodeco_samplers.heads.model.torch_heads import AutoDecoHeadsModule

        class _Model:  # what the attachment reads of a model at a step: its config
            config = PretrainedConfig()  # no logit transform: the given logits are the model's own

        att = AutoDecoAttachment(_Model(), AutoDecoHeadsModule.from_numpy(heads), policy)
        h = torch.from_numpy(np.asarray(hidden, np.float32))
        lg = torch.from_numpy(np.asarray(logits, np.float32))
        # the adapter's step as its processor runs it: lm_head's output (here the logits
        # themselves) read by the heads through the model's final logit transform
        step = att.step(h, lg.clone(), lm_out=lg)
        return step.logits, (step.T_pred, step.P_pred, step.T, step.P)

    def kernel(self, hidden, logits, heads, policy):
        import torch

        out, rest = self._logits(hidden, logits, heads, policy)
        probs = torch.softmax(out, dim=-1)  # transformers' _sample: softmax of the processed scores
        return NumpyStep(*(t.numpy() for t in rest), probs=probs.numpy())

    def draw(self, hidden, logits, heads, policy, n, seed):
        import torch

        out, _ = self._logits(hidden[:1], logits[:1], heads, policy)
        probs = torch.softmax(out, dim=-1).expand(n, -1).contiguous()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return torch.multinomial(probs, num_samples=1)[:, 0].numpy()  # transformers' draw

    def end_to_end(self, workdir, steps: int, seed: int) -> List[dict]:
        """Per architecture in :attr:`architectures` (every base of a released AutoDeco
        checkpoint, plus final-logit softcap, ``logit_scale`` and ``logits_scaling`` models),
        ``steps`` sampled steps of a left-padded batch; the records of all of them."""
        records: List[dict] = []
        for i, arch in enumerate(self.architectures):
            records.extend(self._end_to_end_one(Path(workdir) / arch, arch, steps, seed + 10 * i))
        return records

    def _end_to_end_one(self, workdir, arch: str, steps: int, seed: int) -> List[dict]:
        import torch

        from autodeco_samplers.heads import load_heads
        from autodeco_samplers.models.tiny_models import build_tiny_model, build_tokenizer, save_tiny_heads

        from autodeco_samplers.adapters.transformers import AutoDecoLogitsProcessor, attach

        tok = build_tokenizer(256)
        tok.padding_side = "left"
        model = build_tiny_model(arch, seed=seed, tokenizer=tok)
        heads_dir = save_tiny_heads(Path(workdir) / "heads", model.config.hidden_size, seed=seed + 1)
        heads = load_heads(heads_dir)
        enc = tok(["The quick brown fox", "alpha"], return_tensors="pt", padding=True)
        with attach(model, heads_dir):
            proc = AutoDecoLogitsProcessor(model)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                out = model.generate(**enc, do_sample=True, max_new_tokens=steps, logits_processor=[proc],
                                     output_scores=True, output_logits=True, return_dict_in_generate=True)
        n = len(out.scores)
        L = enc["input_ids"].shape[1]
        mask = torch.cat([enc["attention_mask"], torch.ones(out.sequences.shape[0], n, dtype=torch.long)], dim=1)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.no_grad():
            tf = model(input_ids=out.sequences[:, : L + n], attention_mask=mask, position_ids=pos,
                       output_hidden_states=True)
        records = []
        tr = proc.trace
        for s in range(n):
            hidden = tf.hidden_states[-1][:, L + s - 1].float().numpy()
            ref_logits = tf.logits[:, L + s - 1].float().numpy()  # the model's own (transformed) logits
            ref_T, ref_P = heads.predict(hidden, ref_logits)
            records.append({
                "arch": arch,
                "logits": out.logits[s].float().numpy(),
                "hidden": hidden,
                "probs": torch.softmax(out.scores[s].double(), dim=-1).numpy(),
                "T_pred": tr.T_pred[:, s].numpy(), "P_pred": tr.P_pred[:, s].numpy(),
                "T": tr.T[:, s].numpy(), "P": tr.P[:, s].numpy(),
                "ref_T_pred": ref_T, "ref_P_pred": ref_P,
            })
        return records
