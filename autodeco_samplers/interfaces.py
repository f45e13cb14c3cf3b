"""What a head, a sampler step and an engine's generation report look like, engine-agnostic.

Every adapter reports its generations as a :class:`GenerationResult`; its ``to_dict()`` is
the one JSON schema every ``autodeco generate --json`` prints:
``{"engine", "prompt_ids", "token_ids", "text", "steps": [{"token_id", "T_pred", "P_pred", "T", "P"}]}``.
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


@dataclass
class GenerationResult:
    """One sequence generated with AutoDeco, in the schema shared by every engine."""

    engine: str
    prompt_ids: List[int]
    token_ids: List[int] = field(default_factory=list)
    text: Optional[str] = None
    steps: List[TokenStep] = field(default_factory=list)
    finish_reason: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        return {
            "engine": self.engine,
            "prompt_ids": [int(t) for t in self.prompt_ids],
            "token_ids": [int(t) for t in self.token_ids],
            "text": self.text,
            "steps": [
                {k: (int(v) if k == "token_id" else float(v)) for k, v in asdict(s).items()} for s in self.steps
            ],
        }


@dataclass(frozen=True)
class StepOutput:
    """A batched sampling step: drawn ids and per-row predicted / used (T, P), all ``[B]``."""

    token_ids: np.ndarray
    T_pred: np.ndarray
    P_pred: np.ndarray
    T: np.ndarray
    P: np.ndarray

    def row(self, i: int) -> TokenStep:
        return TokenStep(
            int(self.token_ids[i]), float(self.T_pred[i]), float(self.P_pred[i]), float(self.T[i]), float(self.P[i])
        )
