"""The one llama.cpp decode loop of :class:`~autodeco_samplers.adapters.llama_cpp.AutoDecoLlama`.

Plain and speculative generation are the same loop; speculation only adds drafts to a round.
Each round:

1. (speculative) the drafter proposes up to ``k`` drafts ``d_1 .. d_k`` after the sequence;
2. one ``llama_decode`` of ``[last token, d_1 .. d_k]`` as a ``llama_batch`` whose ``logits``
   flag is set for every token, with embeddings on, so ``llama_get_logits_ith`` and
   ``llama_get_embeddings_ith`` give the logits and the final hidden state (``lm_head``'s
   input) of *each* position, read as zero-copy views;
3. the core NumPy step on each position's own hidden state and logits, one row at a time: with
   no drafts it draws the token itself (:func:`autodeco_samplers.core.step.numpy_step_sample`),
   with drafts every position's distribution
   (:func:`~autodeco_samplers.core.step.numpy_step_distribution`) goes to the exact
   verification rule :func:`autodeco_samplers.core.speculative.verify_drafts`;
4. ``llama_memory_seq_rm`` removes the cache entries of rejected drafts, so the next round
   continues at the first position past the accepted prefix;
5. each emitted token goes through the per-token rule :func:`emit` (EOS, stop strings,
   ``max_new_tokens``, a full context): tokens after the one that ends the generation are
   never emitted.

The prompt is decoded with embeddings off except for its last token (the first round), so
prefill costs what it always costs. One row at a time: equal inputs give bit-equal records,
and a multi-row matmul in the heads would hand NumPy's BLAS to its thread pool, which costs
milliseconds per call on a busy machine (measured on SmolLM2's heads: 9 ms per head call for 5
rows under load, 0.2 ms for one row).

``on_step`` (``AutoDecoLlama.stream(..., on_step=...)``) receives a :class:`StepRecord` per
emitted token: copies of the hidden state and logits the token was drawn from and the step's
result (T and P predicted and used, the canonical distribution, the token).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from autodeco_samplers.core.errors import AutoDecoError
from autodeco_samplers.core.interfaces import GenerationResult, NumpyStep, TokenStep
from autodeco_samplers.core.speculative import verify_drafts
from autodeco_samplers.core.step import numpy_step_distribution, numpy_step_sample
from autodeco_samplers.core.text_stream import StopTextStream

__all__ = ["StepRecord", "StreamedToken", "decode_loop", "emit"]


@dataclass(frozen=True)
class StreamedToken:
    """One generated token as it streams: id, text, predicted and used T and P.

    ``piece`` is the text this token completes (UTF-8 decoded incrementally, so a token in
    the middle of a multi-byte character has an empty piece). ``released`` is the text that
    is final at this token: text that could still turn out to begin a stop string is held
    back until it cannot, and a stop string is never released, so the ``released`` parts of
    a stream always join to :attr:`GenerationResult.text`. Print ``released`` when streaming.
    """

    index: int
    token_id: int
    piece: str
    T_pred: float
    P_pred: float
    T: float
    P: float
    released: str = ""

    @property
    def step(self) -> TokenStep:
        return TokenStep(self.token_id, self.T_pred, self.P_pred, self.T, self.P)


@dataclass(frozen=True)
class StepRecord:
    """What one generated token was drawn from (``stream(..., on_step=...)``).

    Attributes:
        index: the token's index in the generation.
        hidden: ``[H]`` float32, the final hidden state at the position that produced the
            token (a copy).
        logits: ``[V]`` float32, that position's logits (a copy).
        step: the core step on that position, one row: ``T_pred``, ``P_pred``, ``T``, ``P``
            ``[1]``, the canonical distribution ``rows[0] = (ids, probs)`` (``dense(V)`` for
            ``[1, V]``) and ``token_ids`` ``[1]``, the emitted token. Under speculation the
            token is an accepted draft or the verification's draw, distributed as ``rows[0]``.
    """

    index: int
    hidden: np.ndarray
    logits: np.ndarray
    step: NumpyStep


OnStep = Callable[[StepRecord], None]


class _Batch:
    """A ``llama_batch`` of up to ``capacity`` tokens of sequence 0, outputs for every token."""

    def __init__(self, lc: Any, capacity: int) -> None:
        self.lc = lc
        self.batch = lc.llama_batch_init(capacity, 0, 1)

    def fill(self, tokens: Sequence[int], pos0: int) -> Any:
        b = self.batch
        for i, tok in enumerate(tokens):
            b.token[i] = int(tok)
            b.pos[i] = pos0 + i
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = 0
            b.logits[i] = 1
        b.n_tokens = len(tokens)
        return b

    def free(self) -> None:
        if self.batch is not None:
            self.lc.llama_batch_free(self.batch)
            self.batch = None


def _outputs(gen: Any, n: int) -> List[Tuple[np.ndarray, np.ndarray]]:
    """Zero-copy ``(hidden [H], logits [V])`` of each of the ``n`` positions of the last
    decode; valid until the next decode."""
    lc = gen._llama_cpp
    out = []
    for i in range(n):
        lp = lc.llama_get_logits_ith(gen._ctx, i)
        hp = lc.llama_get_embeddings_ith(gen._ctx, i)
        if not lp or not hp:
            raise AutoDecoError(f"llama.cpp returned no logits/embeddings for position {i} of the decoded block")
        out.append((np.ctypeslib.as_array(hp, shape=(gen.hidden_size,)), np.ctypeslib.as_array(lp, shape=(gen.n_vocab,))))
    return out


def position_steps(gen: Any, outputs, policy, drafts: Sequence[int], rng: np.random.Generator, draft_rows):
    """The core step on each decoded position: ``(steps, tokens, n_accepted)``. No drafts: the
    step's own draw on the one position; drafts: every position's distribution and the
    verification rule."""
    if not drafts:
        hidden, logits = outputs[0]
        st = numpy_step_sample(hidden[None], logits[None], gen.heads, policy, rng, exact=gen.exact)
        return [st], [int(st.token_ids[0])], 0
    steps = [numpy_step_distribution(h[None], l[None], gen.heads, policy, exact=gen.exact) for h, l in outputs]
    verdict = verify_drafts([st.rows[0] for st in steps], drafts, rng, draft_rows)
    return steps, [int(t) for t in verdict.tokens], verdict.n_accepted


def emit(gen: Any, index: int, step: TokenStep, text: StopTextStream, decoder, result: GenerationResult,
         stop_at_eos: bool, last: bool) -> Tuple[StreamedToken, bool]:
    """Record one drawn token and say whether the generation ends with it. ``last``:
    ``max_new_tokens`` reached or no room left in the context."""
    result.token_ids.append(step.token_id)
    result.steps.append(step)
    vals = (step.T_pred, step.P_pred, step.T, step.P)
    if stop_at_eos and gen.is_eog(step.token_id):
        result.finish_reason = "eos"
        released = text.finish(decoder.decode(b"", final=True))
        result.text = text.text
        return StreamedToken(index, step.token_id, "", *vals, released=released), True
    piece = decoder.decode(gen.token_bytes(step.token_id))
    released, stopped = text.push(piece)
    if stopped:
        result.text = text.text
        result.finish_reason = "stop"
        return StreamedToken(index, step.token_id, piece, *vals, released=released), True
    if last:
        released += text.finish(decoder.decode(b"", final=True))
    result.text = text.text
    return StreamedToken(index, step.token_id, piece, *vals, released=released), last


def decode_loop(
    gen: Any, prompt_ids: List[int], max_new_tokens: int, stops, rng: np.random.Generator, policy,
    stop_at_eos: bool, result: GenerationResult, decoder, *, drafter=None, num_draft_tokens: int = 0,
    stats=None, on_step: Optional[OnStep] = None,
) -> Iterator[StreamedToken]:
    """Generate after ``prompt_ids`` on ``gen``'s freshly reset context (module docstring).

    ``drafter`` (with ``num_draft_tokens`` ``k``) turns speculation on; ``stats`` (a
    ``SpeculativeStats``) counts rounds, drafts and emitted tokens. Invariant: the cache holds
    ``seq[:n_kv]`` and ``seq[n_kv]`` (the last emitted token, or the prompt's last token) is
    the first token of the next decoded block.
    """
    lc = gen._llama_cpp
    text = StopTextStream(stops)  # stop strings held back and cut: the core's one implementation
    n_ctx = int(gen.llm.n_ctx())
    if drafter is not None:
        drafter.start()
    mem = lc.llama_get_memory(gen._ctx)
    seq = list(prompt_ids)
    lc.llama_set_embeddings(gen._ctx, False)
    head = seq[:-1]
    for start in range(0, len(head), gen._n_batch):
        gen._decode(head[start : start + gen._n_batch])
    lc.llama_set_embeddings(gen._ctx, True)
    n_kv = len(head)
    batch = _Batch(lc, num_draft_tokens + 1)
    index = 0
    try:
        while True:
            # a draft is worth verifying only if its token could be emitted: one more token (the
            # target's own) always follows, and the block's last position must fit the context
            room = min(num_draft_tokens, max_new_tokens - index - 1, n_ctx - n_kv - 1)
            drafts, draft_rows = drafter.propose(seq, room, rng) if drafter is not None and room > 0 else ([], None)
            block = [seq[-1]] + [int(d) for d in drafts]
            rc = lc.llama_decode(gen._ctx, batch.fill(block, n_kv))
            if rc != 0:
                raise AutoDecoError(f"llama_decode failed with code {rc} (context full or out of memory?)")
            outputs = _outputs(gen, len(block))
            steps, tokens, n_accepted = position_steps(gen, outputs, policy, drafts, rng, draft_rows)
            if stats is not None:
                stats.rounds += 1
                stats.drafted += len(drafts)
                stats.accepted += n_accepted
                stats.accepted_per_round.append(n_accepted)
            # the cache holds seq[:n_kv] + block; keep the last token and the accepted drafts
            keep = n_kv + 1 + n_accepted
            if n_accepted < len(drafts) and not lc.llama_memory_seq_rm(mem, 0, keep, -1):
                raise AutoDecoError("llama.cpp could not remove the rejected drafts from the cache")
            if drafter is not None:
                drafter.keep(keep)
            base, n_kv = n_kv, keep
            for j, tok in enumerate(tokens):
                st = steps[j]
                step = TokenStep(tok, float(st.T_pred[0]), float(st.P_pred[0]), float(st.T[0]), float(st.P[0]))
                if on_step is not None:
                    hidden, logits = outputs[j]
                    on_step(StepRecord(index, hidden.copy(), logits.copy(), replace(st, token_ids=np.array([tok]))))
                seq.append(tok)
                # the token was drawn from a cache of base + j + 1 tokens
                last = index + 1 == max_new_tokens or base + j + 1 >= n_ctx
                item, done = emit(gen, index, step, text, decoder, result, stop_at_eos, last)
                index += 1
                if stats is not None:
                    stats.emitted += 1
                yield item
                if done:
                    return
    finally:
        batch.free()
