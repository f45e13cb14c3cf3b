"""``_engine_job.py`` with a deliberately wrong acceptance rule that a test can switch on.

``python _spec_job.py JOB.json OUT.json`` runs the job exactly as ``_engine_job.py`` does. When
the environment variable ``AUTODECO_TEST_WRONG_RULE`` names a file, every process of the
engine wraps vLLM's rejection-sampling step (``rejection_sampler._rejection_random_sample``):
while that file exists, a draft ``d`` is accepted with probability ``sqrt(p(d))`` instead of
``p(d)`` (the residual draw after a rejection is left as it is). vLLM's CPU workers are
spawned and re-import this script as ``__mp_main__``, so the module-level code below runs in
the worker that samples; the job's ``"touch"`` groups create the file between requests.
"""

from __future__ import annotations

import os
import sys

WRONG_RULE_ENV = "AUTODECO_TEST_WRONG_RULE"
_FLAG = os.environ.get(WRONG_RULE_ENV)

if _FLAG:
    from vllm.v1.sample import rejection_sampler as _rs

    _right_rule = _rs._rejection_random_sample

    def _switchable_rule(output_token_ids, cu_num_draft_tokens, draft_token_ids, draft_probs, target_probs, *rest, **kw):
        if os.path.exists(_FLAG):
            target_probs = target_probs.sqrt().contiguous()  # accept with sqrt(p) >= p: wrong
        return _right_rule(output_token_ids, cu_num_draft_tokens, draft_token_ids, draft_probs, target_probs, *rest, **kw)

    _switchable_rule.register_warmup = _right_rule.register_warmup  # RejectionSampler() calls it
    _rs._rejection_random_sample = _switchable_rule

from _engine_job import main  # noqa: E402

if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
