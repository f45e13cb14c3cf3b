"""Training records from the model's own verified answers (the ``targets="self"`` recipe).

The reference completions of :func:`tasks.training_records` are sentences written here
(``The last letter of "lamp" is "p".``); the model would rarely say exactly that, so the heads
learn temperatures that make text the model does not produce likely. This module instead
asks the model itself: every training-split item is sampled ``samples`` times at ``T = 1,
P = 1`` (the canonical rule, the evaluation's batched decode loop, seeded), an answer is kept
when it ended with end-of-sequence and the item's verifier accepts it (for the open family:
it names a valid answer), and ``n`` records are drawn from the kept answers, families in equal
shares (round robin over the families that have any), items uniformly within a family. So the
heads learn from text the model does produce, labelled by whether it is right.

Deterministic for a given seed, torch build and thread count (the build records them).
"""

from __future__ import annotations

import random
from typing import Callable, Dict, List, Optional, Sequence

from autodeco_samplers.models.smollm2 import tasks

__all__ = ["self_verified_answers", "self_verified_records"]


def self_verified_answers(model, tokenizer, *, samples: int = 4, seed: int = 0, max_new_tokens: int = 24,
                          families: Optional[Sequence[str]] = None, max_batch: int = 1024,
                          say: Callable[[str], None] = lambda s: None) -> Dict[str, List[Dict[str, str]]]:
    """Per family, the kept answers (``{"prompt", "completion", "family", "key"}``) of
    ``samples`` draws per training-split item (module docstring)."""
    from autodeco_samplers.research.evaluation.choosers import static_chooser
    from autodeco_samplers.research.evaluation.decode import Segment, generate_rows, prefill

    items = tasks.train_items(families)
    prompt_ids = [tokenizer(it.prompt, add_special_tokens=False)["input_ids"] for it in items]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    kept: Dict[str, List[Dict[str, str]]] = {f: [] for f in dict.fromkeys(it.family for it in items)}
    per_chunk = max(1, max_batch // samples)
    for start in range(0, len(items), per_chunk):
        chunk = list(range(start, min(start + per_chunk, len(items))))
        pre = prefill(model, [prompt_ids[i] for i in chunk], pad)
        rows = tuple(j for j in range(len(chunk)) for _ in range(samples))
        (gen,) = generate_rows(model, pre, [Segment(rows, static_chooser(1.0, 1.0), seed + start)],
                               eos_ids=[tokenizer.eos_token_id], max_new_tokens=max_new_tokens)
        for j, ids, ended in zip(rows, gen.answer_ids(), gen.ended):
            it = items[chunk[j]]
            text = tokenizer.decode(ids, skip_special_tokens=True).strip()
            if ended and text and tasks.check(it, text):
                kept[it.family].append({"prompt": it.prompt, "completion": text, "family": it.family, "key": it.key})
        say(f"self targets: {min(start + per_chunk, len(items))}/{len(items)} items sampled, "
            f"{sum(len(v) for v in kept.values())} answers kept")
    return kept


def self_verified_records(model, tokenizer, n: int, *, seed: int = 0, samples: int = 4, max_new_tokens: int = 24,
                          families: Optional[Sequence[str]] = None,
                          say: Callable[[str], None] = lambda s: None) -> List[Dict[str, str]]:
    """``n`` ``{"prompt", "completion", "family"}`` records drawn from
    :func:`self_verified_answers` (module docstring)."""
    kept = self_verified_answers(model, tokenizer, samples=samples, seed=seed, max_new_tokens=max_new_tokens,
                                 families=families, say=say)
    fams = [f for f, v in kept.items() if v]
    if not fams:
        raise ValueError("the model answered no training item right: no self-verified targets")
    rng = random.Random(seed)
    out = []
    for i in range(n):
        r = rng.choice(kept[fams[i % len(fams)]])
        out.append({"prompt": r["prompt"], "completion": r["completion"], "family": r["family"]})
    return out
