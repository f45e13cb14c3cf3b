"""autodeco_samplers.core.text_stream, engine-free: stop strings held back and cut, incremental text.

The stop rule is checked against a brute-force definition on random pieces and stops
(Hypothesis); the incremental detokenizer against a whole-sequence decode with the embedded
model's real tokenizer on text with multi-byte characters.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autodeco_samplers.core.text_stream import IncrementalDetokenizer, StopTextStream, normalize_stops


def brute_force(pieces, stops):
    """(final text, index of the token that ended it or None): the generation stops at the first
    piece after which some stop string occurs in the text; the text ends before the earliest one."""
    text = ""
    for i, piece in enumerate(pieces):
        text += piece
        hits = [text.find(s) for s in stops if s and s in text]
        if hits:
            return text[: min(hits)], i
    return text, None


alphabet = st.sampled_from("ab<>/ \u00e9")
pieces_st = st.lists(st.text(alphabet, max_size=4), max_size=12)
stops_st = st.lists(st.text(alphabet, min_size=1, max_size=4), max_size=3)


@settings(max_examples=300, deadline=None)
@given(pieces_st, stops_st)
def test_stop_stream_equals_brute_force(pieces, stops):
    s = StopTextStream(stops)
    released = []
    ended_at = None
    for i, piece in enumerate(pieces):
        r, stopped = s.push(piece)
        released.append(r)
        # what is released is final: always a prefix of the final text
        assert s.released == "".join(released)
        if stopped:
            ended_at = i
            break
    if ended_at is None:
        released.append(s.finish())
    want_text, want_end = brute_force(pieces, stops)
    assert ended_at == want_end
    assert s.text == want_text
    assert "".join(released) == want_text


def test_hold_back_then_release():
    s = StopTextStream(["STOP"])
    assert s.push("abc ST") == ("abc ", False)  # "ST" could begin "STOP": held back
    assert s.push("ONE") == ("STONE", False)  # it did not: released
    assert s.push(" S") == (" ", False)
    assert s.finish() == "S"  # the end releases what was held back
    assert s.text == "abc STONE S"
    with pytest.raises(ValueError):
        s.push("x")


def test_stop_spanning_pieces_and_earliest_of_two():
    s = StopTextStream(["cd", "bcx"])
    assert s.push("ab") == ("a", False)
    assert s.push("cdef") == ("b", True)  # "cd" completes here and "bcx" cannot
    assert s.text == "ab" and s.stopped
    assert s.finish() == ""


def test_normalize_stops():
    assert normalize_stops(None) == []
    assert normalize_stops("") == []
    assert normalize_stops("x") == ["x"]
    assert normalize_stops(["", "a", "b"]) == ["a", "b"]


@pytest.fixture(scope="module")
def tokenizer():
    pytest.importorskip("transformers")
    from autodeco_samplers.models import default_model
    from autodeco_samplers.adapters.transformers import load_tokenizer

    return load_tokenizer(default_model.base_path())


@pytest.mark.parametrize("text", [
    "pick one of badger maroon donkey and spell it backwards: badger -> r e g d a b",
    "caf\u00e9 na\u00efve \u00fcber \u65e5\u672c \U0001f600 end",
    "  leading spaces\nnew lines\tand tabs  ",
])
def test_incremental_detokenizer_joins_to_decode(tokenizer, text):
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    ids = ids + [eos]  # a special token decodes to nothing
    d = IncrementalDetokenizer(lambda x: tokenizer.decode(x, skip_special_tokens=True))
    pieces = [d.push(t) for t in ids]
    tail = d.flush()
    assert "".join(pieces) + tail == tokenizer.decode(ids, skip_special_tokens=True)
    assert "\ufffd" not in "".join(pieces)  # never a half character on the way


def test_incremental_detokenizer_holds_incomplete_utf8():
    table = {1: b"a", 2: b"\xe6", 3: b"\x97", 4: b"\xa5", 5: b"b"}
    d = IncrementalDetokenizer(lambda ids: b"".join(table[i] for i in ids).decode("utf-8", errors="replace"))
    assert [d.push(t) for t in (1, 2, 3, 4, 5)] == ["a", "", "", "\u65e5", "b"]
    assert d.flush() == ""
    d2 = IncrementalDetokenizer(lambda ids: b"".join(table[i] for i in ids).decode("utf-8", errors="replace"))
    assert d2.push(2) == "" and d2.flush() == "\ufffd"  # the end shows what never completed
