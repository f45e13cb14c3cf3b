"""Run one vLLM engine in its own process: ``python _engine_job.py JOB.json OUT.json``.

vLLM's CPU engine spawns worker processes, which re-import ``__main__``; running each engine
from this small script (instead of inside pytest) keeps that safe and lets the tests share
one engine for many checks. JOB holds ``model``, ``engine`` (``LLM`` keyword arguments) and
``requests``: a list of ``{"prompts": [...], "params": {SamplingParams kwargs}, "n_logprobs":
bool}``. OUT gets, per request group, per prompt, ``token_ids`` and (if asked) per-step
``{token_id: logprob}`` dicts; or ``{"error": "..."}`` when the engine fails to start.
"""

from __future__ import annotations

import json
import sys
import traceback


def main(job_path: str, out_path: str) -> None:
    job = json.loads(open(job_path).read())
    try:
        from vllm import LLM, SamplingParams

        llm = LLM(job["model"], **job["engine"])
    except Exception as exc:  # report the load failure to the test
        text = "".join(traceback.format_exception(exc))
        json.dump({"error": text}, open(out_path, "w"))
        return
    results = []
    for group in job["requests"]:
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
    json.dump({"results": results}, open(out_path, "w"))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
