"""The vLLM adapter as a conformance-suite engine (``vllm``), run in ``.venv-vllm``.

Levels (see :mod:`autodeco_samplers.conformance.engines`):

* ``kernel``: the core step :func:`autodeco_samplers.core.step.torch_step_logits` called as
  the model's ``compute_logits`` calls it (default ``sync`` and ``fill``) on the given hidden
  states and logits; the distribution is the exponential of vLLM's own
  ``Sampler.compute_logprobs`` of it, i.e. what vLLM's sampler draws from at temperature 1,
  top-p 1 and what it returns as logprobs.
* ``end-to-end``: a real vLLM engine (in a child process) on a tiny seeded Llama (hidden 128,
  4 attention heads) with random heads, prepared by
  :func:`autodeco_samplers.adapters.vllm.prepare.prepare_vllm_checkpoint`; one seeded request
  with full-vocabulary logprobs. Per step: the raw logits and predicted / used T, P from the
  model's trace (:data:`autodeco_samplers.adapters.vllm.model_mixin.TRACE_ENV`), the
  distribution from vLLM's returned logprobs, and, as reference for the heads, NumPy heads on
  a transformers teacher-forced forward of the same weights.

Register with ``ENGINE_MODULES["vllm"] = ("autodeco_samplers.conformance.engines.vllm",
"VLLMEngine")``. Run this module as a script to execute one end-to-end job.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import List, Tuple

import numpy as np

from autodeco_samplers.conformance.engines import ConformanceEngine
from autodeco_samplers.core.interfaces import NumpyStep

__all__ = ["VLLMEngine", "run_traced_job"]

_MODEL = dict(vocab_size=320, hidden_size=128, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=256)
_PROMPT = "The quick brown fox"


class VLLMEngine(ConformanceEngine):
    name = "vllm"
    requires = ("vllm.v1.sample.sampler",)
    missing_reason = "vLLM is not installed ({exc}); use .venv-vllm (scripts/setup_vllm.sh)"

    def kernel(self, hidden, logits, heads, policy):
        import torch
        from vllm.v1.sample.sampler import Sampler

        from autodeco_samplers.core.step import torch_step_logits
        from autodeco_samplers.heads import AutoDecoHeadsModule

        module = AutoDecoHeadsModule.from_numpy(heads)
        with torch.no_grad():
            step = torch_step_logits(torch.from_numpy(np.asarray(hidden, np.float32)),
                                     torch.from_numpy(np.asarray(logits, np.float32)), module, policy)
            probs = Sampler.compute_logprobs(step.logits).exp()
        return NumpyStep(step.T_pred.numpy(), step.P_pred.numpy(), step.T.numpy(), step.P.numpy(), probs=probs.numpy())

    def end_to_end(self, workdir, steps: int, seed: int) -> List[dict]:
        import torch
        from transformers import AutoModelForCausalLM

        from autodeco_samplers.heads import load_heads
        from autodeco_samplers.models.tiny_models import save_tiny_heads, save_tiny_model

        from autodeco_samplers.adapters.vllm.prepare import prepare_vllm_checkpoint

        work = Path(workdir)
        base = save_tiny_model(work / "base", "llama", seed=seed, **_MODEL)
        heads_dir = save_tiny_heads(work / "heads", _MODEL["hidden_size"], seed=seed + 1)
        served = prepare_vllm_checkpoint(base, work / "served", heads=heads_dir)
        result, steps_ = run_traced_job(__name__, served, work, [steps, seed])
        prompt, toks = result["prompt_token_ids"], result["token_ids"]
        heads = load_heads(heads_dir)
        model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32).eval()
        with torch.no_grad():
            tf = model(input_ids=torch.tensor([prompt + toks]), output_hidden_states=True)
        records = []
        for s, rec in enumerate(steps_):
            t = len(prompt) + s - 1
            hidden = tf.hidden_states[-1][0, t : t + 1].float().numpy()
            rec["ref_T_pred"], rec["ref_P_pred"] = heads.predict(hidden, tf.logits[0, t : t + 1].float().numpy())
            records.append(rec)
        return records


def run_traced_job(module: str, served, work: Path, job_args) -> Tuple[dict, List[dict]]:
    """Run ``python -m MODULE SERVED OUT *job_args`` (a vLLM job writing its result JSON with
    ``prompt_token_ids``, ``token_ids`` and full-vocabulary ``logprobs``) with the model's trace
    folder set (``AUTODECO_VLLM_TRACE_DIR``). Returns ``(result, steps)``: per generated token
    the engine's ``logits``, ``hidden``, ``T_pred``, ``P_pred``, ``T``, ``P`` (each ``[1, ...]``,
    rank 0) and ``probs``, the distribution its returned logprobs give."""
    trace, out = work / "trace", work / "out.json"
    env = dict(os.environ, AUTODECO_VLLM_TRACE_DIR=str(trace))
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    proc = subprocess.run([sys.executable, "-m", module, str(served), str(out), *map(str, job_args)],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if not out.is_file():
        raise RuntimeError(f"vLLM end-to-end job failed ({proc.returncode}):\n{proc.stdout[-3000:]}")
    result = json.loads(out.read_text())
    toks, lps = result["token_ids"], result["logprobs"]
    files = sorted(trace.glob("step_*_rank0.npz"))
    if len(files) < len(toks):
        raise RuntimeError(f"trace has {len(files)} steps for {len(toks)} tokens")
    steps = []
    for s in range(len(toks)):
        rec = np.load(files[s])
        probs = np.zeros(rec["logits"].shape[-1])
        for k, v in lps[s].items():
            probs[int(k)] = np.exp(v)
        steps.append({**{k: rec[k][:1] for k in ("logits", "hidden", "T_pred", "P_pred", "T", "P")}, "probs": probs[None]})
    return result, steps


def _job(served: str, out: str, steps: int, seed: int) -> None:
    from vllm import LLM, SamplingParams

    llm = LLM(served, dtype="float32", max_model_len=128, enforce_eager=True, max_num_seqs=4, seed=0, max_logprobs=-1)
    o = llm.generate([_PROMPT], SamplingParams(max_tokens=steps, seed=seed, logprobs=-1, ignore_eos=True), use_tqdm=False)[0]
    c = o.outputs[0]
    json.dump({
        "prompt_token_ids": list(o.prompt_token_ids), "token_ids": list(c.token_ids),
        "logprobs": [{str(k): v.logprob for k, v in step.items()} for step in c.logprobs],
    }, open(out, "w"))


if __name__ == "__main__":
    _job(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
