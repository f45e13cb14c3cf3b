"""What a head, a sampler step and an engine's generation report look like, engine-agnostic.

Every adapter reports its generations as a :class:`GenerationResult`; its ``to_dict()`` is
the one JSON schema every ``autodeco generate --json`` prints, whatever the engine:
``{"engine", "prompt_ids", "token_ids", "text", "finish_reason", "steps": [{"token_id",
"T_pred", "P_pred", "T", "P"}]}``. The machine-readable form is the JSON Schema file
``autodeco_samplers/core/schemas/generation.schema.json`` (:func:`generation_schema`); the
fields are documented in docs/design.md section 3.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Protocol, Tuple, runtime_checkable

import numpy as np


@runtime_checkable
class Heads(Protocol):
    """Anything that predicts ``(T, P)`` per row from hidden states and logits."""

    @property
    def hidden_size(self) -> int: ...

    @property
    def needs_logits(self) -> bool: ...

    def predict(self, hidden: Any, logits: Any = None) -> Tuple[Any, Any]: ...


@dataclass(frozen=True)
class TokenStep:
    """One generated token with the temperature and top-p predicted and actually used."""

    token_id: int
    T_pred: float
    P_pred: float
    T: float
    P: float


FINISH_REASONS = ("eos", "stop", "length")
"""Why a generation ended: ``"eos"`` an end-of-generation token was drawn (it is the last of
``token_ids``); ``"stop"`` a stop string appeared in the text (the token completing it is the
last of ``token_ids``; ``text`` ends before the stop string); ``"length"`` ``max_new_tokens``
tokens were generated or the context is full."""


@dataclass
class GenerationResult:
    """One sequence generated with AutoDeco, in the schema shared by every engine.

    Attributes:
        engine: the engine's name (``"transformers"``, ``"llama-cpp"``, ...).
        prompt_ids: the prompt's token ids as the engine fed them (BOS included when the
            tokenizer adds one).
        token_ids: every generated token, special tokens (EOS) included.
        text: the generated text, decoded **without** special tokens (no ``<|endoftext|>``,
            no EOS marker), ending before a stop string; ``None`` when the model has no
            tokenizer.
        steps: one :class:`TokenStep` per entry of ``token_ids``.
        finish_reason: one of :data:`FINISH_REASONS`.
    """

    engine: str
    prompt_ids: List[int]
    token_ids: List[int] = field(default_factory=list)
    text: Optional[str] = None
    steps: List[TokenStep] = field(default_factory=list)
    finish_reason: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        """The JSON form (``generation.schema.json``): plain ints, floats and strings."""
        return {
            "engine": self.engine,
            "prompt_ids": [int(t) for t in self.prompt_ids],
            "token_ids": [int(t) for t in self.token_ids],
            "text": self.text,
            "finish_reason": self.finish_reason,
            "steps": [
                {k: (int(v) if k == "token_id" else float(v)) for k, v in asdict(s).items()} for s in self.steps
            ],
        }


def generation_schema() -> Dict[str, Any]:
    """The JSON Schema (draft 2020-12) of :meth:`GenerationResult.to_dict`, shipped in the package."""
    import json
    from pathlib import Path

    return json.loads((Path(__file__).parent / "schemas" / "generation.schema.json").read_text(encoding="utf-8"))


@dataclass(frozen=True)
class NumpyStep:
    """One batched NumPy step: per-row predicted and used (T, P), all ``[B]``, and what the
    step produced (``None`` when not produced): the canonical distribution of each row as
    ``rows`` (``rows[b] = (ids, probs)``, the kept token ids ascending and their
    probabilities, as :func:`autodeco_samplers.core.step.numpy_step_distribution` returns it)
    and/or dense ``probs`` ``[B, V]``, and drawn ``token_ids`` ``[B]``. The torch twin is
    :class:`autodeco_samplers.core.step.TorchStep` (same field names and meaning, ``logits``
    in place of ``probs``)."""

    T_pred: np.ndarray
    P_pred: np.ndarray
    T: np.ndarray
    P: np.ndarray
    token_ids: Optional[np.ndarray] = None
    probs: Optional[np.ndarray] = None
    rows: Optional[List[Tuple[np.ndarray, np.ndarray]]] = None

    def dense(self, vocab_size: int) -> np.ndarray:
        """The distribution as ``[B, vocab_size]`` float64: ``probs`` when set, else ``rows``
        scattered into zeros."""
        if self.probs is not None:
            return np.atleast_2d(np.asarray(self.probs, dtype=np.float64))
        if self.rows is None:
            raise ValueError("this step holds no distribution (neither probs nor rows)")
        out = np.zeros((len(self.rows), vocab_size), dtype=np.float64)
        for b, (ids, probs) in enumerate(self.rows):
            out[b, ids] = probs
        return out

    def row(self, i: int) -> TokenStep:
        """Row ``i`` as the :class:`TokenStep` a generation records (needs ``token_ids``)."""
        return TokenStep(
            int(self.token_ids[i]), float(self.T_pred[i]), float(self.P_pred[i]), float(self.T[i]), float(self.P[i])
        )
