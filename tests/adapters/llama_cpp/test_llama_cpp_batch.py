""":class:`LlamaBatchDecoder` (several sequences on one llama.cpp context) on real llama.cpp.

The reference is the adapter's single-sequence loop, ``AutoDecoLlama.generate``: a sequence
alone in the decoder is bit-equal to it (tokens, T, P, the logits it was drawn from); sequences
that share decodes (joining and leaving at different steps, reusing freed slots) draw the same
tokens with T/P equal to 1e-5 (float32 matmuls over a different batch may round differently in
the last bits).
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("llama_cpp")
pytest.importorskip("transformers")

from _llama_util import assets, hf_tokenizer, llama

from autodeco_samplers import DecodingPolicy, load_heads
from autodeco_samplers.adapters.llama_cpp import AutoDecoLlama
from autodeco_samplers.adapters.llama_cpp.batch import LlamaBatchDecoder
from autodeco_samplers.core.errors import InvalidParameterError

PROMPTS = ["The quick brown fox", "Once upon a time there was", "a", "The quick brown fox jumps over the lazy dog and"]
MULTS = [(1.0, 1.0), (0.0, 1.0), (1.5, 0.8), (0.7, 1.3)]


@pytest.fixture(scope="module")
def gen():
    return AutoDecoLlama(llama(), load_heads(assets()["heads_gguf"]), seed=0)


def _jobs():
    tok = hf_tokenizer()
    jobs = []
    for i in range(8):
        t, p = MULTS[i % 4]
        jobs.append(dict(prompt=tok.encode(PROMPTS[i % 4]), n=6 + 5 * (i % 3), seed=100 + i,
                         policy=DecodingPolicy().for_request(t, p)))
    return jobs


def _alone(gen, job, logits=None):
    return gen.generate(job["prompt"], max_new_tokens=job["n"], seed=job["seed"], policy=job["policy"],
                        stop_at_eos=False, on_step=None if logits is None else (lambda r: logits.append(r.logits)))


def _drive(dec, jobs, order):
    """Start ``jobs`` in ``order`` whenever a slot is free, step until all ended."""
    owner, got, pending = {}, {i: [] for i in range(len(jobs))}, list(order)
    results, logits = {}, {i: [] for i in range(len(jobs))}
    while pending or dec.active():
        while pending and dec.free_slots():
            k = pending.pop(0)
            j = jobs[k]
            owner[dec.start(j["prompt"], max_new_tokens=j["n"], seed=j["seed"], policy=j["policy"], stop_at_eos=False,
                            want_logits=True)] = k
        for ev in dec.step():
            k = owner[ev.slot]
            got[k].append(ev.token)
            logits[k].append(ev.logits)
            if ev.done:
                results[k] = ev.result
    return got, results, logits


def test_alone_is_bit_equal_to_the_single_sequence_loop(gen):
    dec = LlamaBatchDecoder(gen, 3)
    try:
        for job in _jobs()[:4]:
            want_logits = []
            want = _alone(gen, job, want_logits)
            got, results, logits = _drive(dec, [job], [0])
            assert [t.token_id for t in got[0]] == want.token_ids
            assert [t.step for t in got[0]] == want.steps  # T_pred, P_pred, T, P bit-equal
            assert results[0].text == want.text and results[0].finish_reason == want.finish_reason
            for a, b in zip(logits[0], want_logits):
                assert np.array_equal(a, b)
    finally:
        dec.close()


def test_sequences_sharing_decodes_draw_what_they_draw_alone(gen):
    jobs = _jobs()
    alone = [_alone(gen, j) for j in jobs]
    dec = LlamaBatchDecoder(gen, 3, prefill_tokens=4)  # prompts take several prefill steps
    try:
        got, results, _ = _drive(dec, jobs, [3, 0, 5, 1, 7, 2, 6, 4])
    finally:
        dec.close()
    for k, want in enumerate(alone):
        assert [t.token_id for t in got[k]] == want.token_ids, k
        assert results[k].text == want.text
        for a, b in zip(got[k], want.steps):
            for key in ("T_pred", "P_pred", "T", "P"):
                assert getattr(a, key) == pytest.approx(getattr(b, key), rel=1e-5, abs=1e-7)
    assert all(s.T == 0 for k, j in enumerate(jobs) if j["policy"].temperature == 0 for s in got[k])


def test_release_frees_the_slot_and_its_cells(gen):
    job = _jobs()[2]
    want = _alone(gen, job)
    dec = LlamaBatchDecoder(gen, 1)
    try:
        slot = dec.start(job["prompt"], max_new_tokens=50, seed=1)
        for _ in range(5):
            dec.step()
        assert dec.free_slots() == []
        with pytest.raises(InvalidParameterError, match="all 1 slots are busy"):
            dec.start([1, 2], max_new_tokens=2)
        assert len(dec.result(slot).token_ids) == 5  # each step draws one (the first after its prefill decode)
        dec.release(slot)
        assert dec.free_slots() == [0] and dec.step() == []
        got, _, _ = _drive(dec, [job], [0])  # the reused slot starts from an empty cache
        assert [t.token_id for t in got[0]] == want.token_ids
    finally:
        dec.close()


def test_bad_sequences_are_refused(gen):
    dec = LlamaBatchDecoder(gen, 2, n_ctx=16)
    try:
        with pytest.raises(InvalidParameterError, match="outside the vocabulary"):
            dec.start([1, gen.n_vocab], max_new_tokens=2)
        with pytest.raises(InvalidParameterError, match="context holds 16"):
            dec.start(list(range(1, 17)), max_new_tokens=2)
        with pytest.raises(InvalidParameterError, match="empty prompt"):
            dec.start([], max_new_tokens=2)
        with pytest.raises(InvalidParameterError, match="max_new_tokens"):
            dec.start([1], max_new_tokens=0)
        # a full slot context ends the sequence with "length", as the single-sequence loop does
        dec.start(list(range(1, 11)), max_new_tokens=100, seed=0, stop_at_eos=False)
        events = []
        while dec.active():
            events += dec.step()
        assert len(events) == 16 - 10 + 1 and events[-1].done  # drawn from caches of 10 .. 16 tokens and events[-1].result.finish_reason == "length"
    finally:
        dec.close()
    with pytest.raises(InvalidParameterError, match="n_slots"):
        LlamaBatchDecoder(gen, 0)
