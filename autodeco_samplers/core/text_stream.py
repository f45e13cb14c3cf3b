"""Streamed text, engine-free: incremental detokenization and stop strings.

Every engine that streams text needs the same two things, and they live here once:

* :class:`StopTextStream` turns the text pieces of successive tokens into the text that is
  *final* at each token. The rule (the one the llama.cpp adapter and the server stream by):

  - a stop string is looked for in the whole text so far (only where it could newly end), and
    the generation stops at the token whose piece completes the first one; the text ends
    *before* the stop string, which is never released;
  - text that could still turn out to be the beginning of a stop string (the longest suffix of
    the text that is a proper prefix of some stop string) is held back until it cannot;
  - :meth:`StopTextStream.finish` (end of generation: EOS, length, a full context) releases
    what was held back.

  So the ``released`` parts of a stream always join to :attr:`StopTextStream.text`, the
  generation's final text.
* :class:`IncrementalDetokenizer` gives the text each new token adds, from any
  ``decode(ids) -> str`` that decodes a whole sequence (a Hugging Face tokenizer's
  ``decode``). It decodes a short window (the previous token or tokens plus the new ones), so
  a token is decoded with its left context (leading spaces of SentencePiece pieces come out
  right) at a constant cost per token, and it holds a token back while the window's text ends
  in U+FFFD (an incomplete UTF-8 sequence of a byte-level tokenizer). The pieces join to
  ``decode(ids)`` for byte-level BPE tokenizers (tested on the embedded model's tokenizer).

llama.cpp gives bytes per token instead; its adapter decodes them with
``codecs.getincrementaldecoder("utf-8")`` and then uses :class:`StopTextStream` too.
"""

from __future__ import annotations

from typing import Callable, Iterable, List, Sequence, Tuple, Union

__all__ = ["StopTextStream", "IncrementalDetokenizer", "normalize_stops"]

_REPLACEMENT = "\ufffd"


def normalize_stops(stop: Union[str, Iterable[str], None]) -> List[str]:
    """A stop argument (``None``, one string or several) as a list of non-empty strings."""
    if stop is None:
        return []
    if isinstance(stop, str):
        return [stop] if stop else []
    return [s for s in stop if s]


class StopTextStream:
    """Text released token by token, with stop strings held back and cut (module docstring).

    >>> s = StopTextStream(["</s>"])
    >>> s.push("Hello <"), s.push("/"), s.push("s> tail")
    (('Hello ', False), ('', False), ('', True))
    >>> s.text
    'Hello '
    """

    def __init__(self, stops: Union[str, Sequence[str], None] = None) -> None:
        self.stops: List[str] = normalize_stops(stops)
        self._longest = max((len(s) for s in self.stops), default=0)
        self._text = ""
        self._emitted = 0  # self._text[:self._emitted] has been released
        self.stopped = False
        self.finished = False

    @property
    def text(self) -> str:
        """All text so far; after a stop, the text before the stop string."""
        return self._text

    @property
    def released(self) -> str:
        """The text released so far (a prefix of :attr:`text`)."""
        return self._text[: self._emitted]

    def _held_back(self) -> int:
        """Length of the longest suffix of the text that is a proper prefix of a stop string."""
        best = 0
        text = self._text
        for stop in self.stops:
            for k in range(min(len(stop) - 1, len(text)), best, -1):
                if text.endswith(stop[:k]):
                    best = k
                    break
        return best

    def push(self, piece: str) -> Tuple[str, bool]:
        """Add one token's text; returns ``(released, stopped)``: the text that became final
        with this token, and whether it completed a stop string (then the stream is over and
        :attr:`text` ends before the stop string)."""
        if self.stopped or self.finished:
            raise ValueError("the stream has ended (a stop string was found or finish() was called)")
        before = len(self._text)
        self._text += piece
        if self.stops and piece:
            start = max(0, before - self._longest + 1)
            hits = [p for p in (self._text.find(s, start) for s in self.stops) if p >= 0]
            if hits:
                hit = min(hits)
                released = self._text[self._emitted : hit]
                self._text = self._text[:hit]
                self._emitted = hit
                self.stopped = True
                return released, True
        safe = len(self._text) - (self._held_back() if self.stops else 0)
        if safe <= self._emitted:
            return "", False
        released = self._text[self._emitted : safe]
        self._emitted = safe
        return released, False

    def finish(self, tail: str = "") -> str:
        """The generation ended without a stop string: add ``tail`` (e.g. what an incremental
        decoder still held) and release everything held back. Idempotent after a stop."""
        if self.stopped or self.finished:
            return ""
        self._text += tail
        released = self._text[self._emitted :]
        self._emitted = len(self._text)
        self.finished = True
        return released


class IncrementalDetokenizer:
    """The text each new token adds, from a whole-sequence ``decode(ids) -> str``.

    ``decode`` should skip special tokens (the text policy of every engine: ``text`` never
    shows EOS or other control tokens). :meth:`push` returns the new text (``""`` while an
    incomplete UTF-8 sequence is pending); :meth:`flush` returns what is still pending at the
    end (replacement characters included).

    >>> tokens = {1: "ab", 2: "c"}
    >>> d = IncrementalDetokenizer(lambda ids: "".join(tokens[i] for i in ids))
    >>> d.push(1), d.push(2), d.flush()
    ('ab', 'c', '')
    """

    def __init__(self, decode: Callable[[Sequence[int]], str]) -> None:
        self._decode = decode
        self.ids: List[int] = []
        self._prefix = 0  # start of the decode window (left context)
        self._read = 0  # ids[:_read] have had their text returned

    def push(self, token_id: int) -> str:
        self.ids.append(int(token_id))
        return self._advance(final=False)

    def flush(self) -> str:
        return self._advance(final=True)

    def _advance(self, *, final: bool) -> str:
        if self._read >= len(self.ids):
            return ""
        done = self._decode(self.ids[self._prefix : self._read]) if self._read > self._prefix else ""
        window = self._decode(self.ids[self._prefix :])
        if not final and (len(window) <= len(done) or window.endswith(_REPLACEMENT)):
            return ""
        piece = window[len(done) :]
        self._prefix, self._read = self._read, len(self.ids)
        return piece

