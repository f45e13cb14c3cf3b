"""The independent side of the vLLM tests: HF transformers forward + NumPy heads + reference.

Nothing here touches the adapter: hidden states come from transformers'
``output_hidden_states``, the heads are the NumPy ones, the distribution is
:func:`autodeco_samplers.core.reference.next_token_distribution` after :meth:`DecodingPolicy.apply`.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Sequence

import numpy as np

from autodeco_samplers.core.policy import DecodingPolicy
from autodeco_samplers.core.reference import next_token_distribution


def load_hf(base: Path):
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(1)
    return AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32).eval()


def hf_greedy(model, prompt_ids: Sequence[int], n: int) -> List[int]:
    import torch

    ids = torch.tensor([list(prompt_ids)])
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=n,
                             min_new_tokens=n, pad_token_id=model.config.pad_token_id)
    return out[0, ids.shape[1]:].tolist()


def canonical_steps(model, heads, policy: DecodingPolicy, prompt_ids: Sequence[int], generated: Sequence[int]):
    """Per generated position ``s``: ``(probs [V] float64, T_used, P_used)`` of the canonical
    distribution of the token at ``len(prompt) + s``, from one teacher-forced forward."""
    import torch

    seq = torch.tensor([list(prompt_ids) + list(generated)])
    with torch.no_grad():
        out = model(input_ids=seq, output_hidden_states=True)
    hidden = out.hidden_states[-1][0].double().numpy()
    logits = out.logits[0].double().numpy()
    L = len(prompt_ids)
    steps = []
    for s in range(len(generated) + 1):
        t = L + s - 1
        T_pred, P_pred = heads.predict(hidden[t:t + 1].astype(np.float32), logits[t:t + 1].astype(np.float32))
        T, P = policy.apply(T_pred.astype(np.float64), P_pred.astype(np.float64))
        steps.append((next_token_distribution(logits[t:t + 1], T, P)[0], float(T[0]), float(P[0])))
    return steps


def assert_canonical_logprobs(returned: dict, probs: np.ndarray, token: int, label: str = "") -> None:
    """vLLM's returned full-vocabulary logprobs of one step (``{token id: logprob}``) equal
    ``log(probs)`` inside the canonical nucleus (atol 2e-4) and are practically minus infinity
    outside it; the sampled ``token`` lies inside it."""
    got = np.full(probs.size, -np.inf)
    for k, v in returned.items():
        got[int(k)] = v
    assert probs[token] > 0, f"{label}: sampled token {token} is outside the canonical nucleus"
    inside = probs > 1e-12
    np.testing.assert_allclose(got[inside], np.log(probs[inside]), atol=2e-4, rtol=0)
    assert np.all(got[probs == 0] < -1e20)
