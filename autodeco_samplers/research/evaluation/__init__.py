"""Evaluating decoding strategies: the toy task of the embedded model (:mod:`.toy_task`,
:mod:`.toy`) and the chat evaluation on a real model (:mod:`.chat`).

Both are built from the same parts: the strategies (:mod:`.strategies`), their per-step draws
(:mod:`.choosers`: a :data:`Chooser` turns a batch's hidden states and logits into a
:class:`Choice` of tokens), the one batched decode loop (:mod:`.decode`) and the statistics,
frontier, tables and plots of a report (:mod:`.report`)."""

from autodeco_samplers.research.evaluation.choosers import Choice, Chooser
from autodeco_samplers.research.evaluation.strategies import Strategy

__all__ = ["Choice", "Chooser", "Strategy"]
