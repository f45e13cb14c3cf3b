"""Run one vLLM engine in its own process: ``python _engine_job.py JOB.json OUT.json``.

vLLM's CPU engine spawns worker processes, which re-import ``__main__``; running each engine
from this small script (instead of inside pytest) keeps that safe and lets the tests share
one engine for many checks. JOB holds ``model``, ``engine`` (``LLM`` keyword arguments) and
``requests``: a list of ``{"prompts": [...], "params": {SamplingParams kwargs}, "n_logprobs":
bool}``; a prompt is a string or ``{"prompt_token_ids": [...]}``, and a group with ``"touch":
PATH`` creates that file before it runs (a switch the engine's processes can see). OUT gets,
per request group, per prompt, ``token_ids`` and (if asked) per-step ``{token_id: logprob}``
dicts; or ``{"error": "..."}`` when the engine fails to start. With ``"spec_metrics": true``
(and ``disable_log_stats=False`` in ``engine``) OUT also gets, per group, vLLM's speculative
counters for that group: ``drafts`` (verification steps with drafts), ``draft_tokens`` and
``accepted_tokens``.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

SPEC_COUNTERS = {
    "drafts": "vllm:spec_decode_num_drafts",
    "draft_tokens": "vllm:spec_decode_num_draft_tokens",
    "accepted_tokens": "vllm:spec_decode_num_accepted_tokens",
}


def spec_counters(llm) -> dict:
    values = {m.name: getattr(m, "value", None) for m in llm.get_metrics()}
    return {key: int(values.get(name) or 0) for key, name in SPEC_COUNTERS.items()}


def main(job_path: str, out_path: str) -> None:
    job = json.loads(open(job_path).read())
    try:
        from vllm import LLM, SamplingParams

        llm = LLM(job["model"], **job["engine"])
    except Exception as exc:  # report the load failure to the test
        text = "".join(traceback.format_exception(exc))
        json.dump({"error": text}, open(out_path, "w"))
        return
    results, metrics = [], []
    for group in job["requests"]:
        if group.get("touch"):
            Path(group["touch"]).touch()
        before = spec_counters(llm) if job.get("spec_metrics") else None
        prompts = group["prompts"]
        params = group["params"]
        if isinstance(params, list):
            sps = [SamplingParams(**p) for p in params]
        else:
            sps = SamplingParams(**params)
        outs = llm.generate(prompts, sps, use_tqdm=False)
        rows = []
        for o in outs:
            c = o.outputs[0]
            row = {"token_ids": list(c.token_ids), "prompt_token_ids": list(o.prompt_token_ids)}
            if c.logprobs is not None:
                row["logprobs"] = [{str(k): v.logprob for k, v in step.items()} for step in c.logprobs]
            rows.append(row)
        results.append(rows)
        if before is not None:
            after = spec_counters(llm)
            metrics.append({key: after[key] - before[key] for key in after})
    out = {"results": results}
    if job.get("spec_metrics"):
        out["spec_metrics"] = metrics
    json.dump(out, open(out_path, "w"))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
