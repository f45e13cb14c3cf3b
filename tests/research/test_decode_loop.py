"""The shared decode loop's random numbers (research/evaluation/decode.py): a row's uniforms
depend only on its segment's seed, its place in the segment and the step, so strategies drawn
with the same seed and row layout are drawn on the same luck (common random numbers)."""

from __future__ import annotations

import pytest
import torch

from autodeco_samplers.models.tiny_models import build_tiny_model, build_tokenizer
from autodeco_samplers.research.evaluation.choosers import baseline_chooser, static_chooser
from autodeco_samplers.research.baselines.numpy_baselines import Baseline
from autodeco_samplers.research.evaluation.decode import Segment, generate_rows, prefill


@pytest.fixture(scope="module")
def tiny():
    tok = build_tokenizer()
    model = build_tiny_model("llama", seed=3, tokenizer=tok)
    prompts = [tok(t, add_special_tokens=False)["input_ids"] for t in ("the cat", "a dog ran far", "one", "red fox owl")]
    return model, tok, prompts


def _run(tiny, segments, **kw):
    model, tok, prompts = tiny
    pre = prefill(model, prompts, tok.pad_token_id)
    # the tiny model rarely draws EOS: let every row end on one of its 40 most likely tokens as well, so rows end
    # at different steps and leave the batch
    frequent = torch.argsort(pre.logits.mean(0), descending=True)[:40].tolist()
    return generate_rows(model, pre, segments, eos_ids=[tok.eos_token_id] + frequent, max_new_tokens=12, **kw)


def test_same_seed_and_layout_draw_the_same_tokens_wherever_the_rows_sit(tiny):
    rows = (0, 1, 2, 3, 0, 1, 2, 3)
    # one T=1 P=1 draw through the canonical rule, one through a baseline with the same
    # distribution (min-p 0 keeps every token), in one batch; a third segment with another seed
    same_a = Segment(rows, static_chooser(1.0, 1.0), 7)
    same_b = Segment(rows, baseline_chooser(Baseline("min_p", {"min_p": 0.0})), 7)
    other = Segment(rows, static_chooser(1.0, 1.0), 8)
    a, c, b = _run(tiny, [same_a, other, same_b])
    assert a.token_ids == b.token_ids
    assert len({len(ids) for ids in a.token_ids}) > 1  # rows ended at different steps and left the batch
    assert a.token_ids != c.token_ids
    # alone, and with the rows kept in the batch after they end: the same tokens
    (alone,) = _run(tiny, [same_a])
    (kept,) = _run(tiny, [same_a], keep_finished=True, pad_id=tiny[1].pad_token_id)
    assert alone.token_ids == a.token_ids == kept.token_ids


def test_a_rows_uniform_is_its_seeds_table_entry(tiny):
    """Row ``j`` of a segment draws at step ``t`` with ``U[t, j]`` of
    ``torch.rand((max_new_tokens, rows), generator=seed)``: a recording chooser sees exactly those."""
    seen = []

    def record(hidden, logits, u):
        seen.append(u.clone())
        return static_chooser(1.0, 1.0)(hidden, logits, u)

    rows = (0, 1, 2, 3)
    (gen,) = _run(tiny, [Segment(rows, record, 5)])
    U = torch.rand((12, 4), dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    live = list(range(4))
    for t, u in enumerate(seen):
        assert torch.equal(u, U[t, live])
        live = [j for j in live if len(gen.token_ids[j]) > t + 1]
