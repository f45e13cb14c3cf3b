"""autodeco-samplers: decode the AutoDeco way on any serving stack.

Two tiny heads read the model's final hidden state and predict, per token, the
temperature ``T`` and top-p ``P`` to sample with. This package holds the engine-agnostic
core (NumPy reference and torch implementation of the canonical semantics, the heads and
their checkpoints, the decoding policy, the CLI); engine adapters live in
:mod:`autodeco_samplers.adapters` and import their engine only when used.

>>> import numpy as np, autodeco_samplers as ad
>>> ad.next_token_distribution(np.log([0.5, 0.3, 0.2]), T=1.0, P=0.6).round(3).tolist()
[0.625, 0.375, 0.0]
"""

import importlib.abc
import importlib.util
import sys
from pathlib import Path

_MAPPED = {"heads": "heads", "adapters": "adapters", "conformance": "conformance"}


class _SourceTreeFinder(importlib.abc.MetaPathFinder):
    """Maps ``autodeco_samplers.heads`` / ``.adapters`` / ``.conformance`` to the top-level
    ``heads/``, ``adapters/``, ``conformance/`` folders of a source checkout.

    The repository keeps those folders at the top level (docs/design.md section 6) and the
    installers map them into this package. Python run from the repository root imports
    *this* folder (the current directory comes first on ``sys.path``), which lacks them, so
    after a regular (non-editable) install ``import autodeco_samplers.heads`` would fail
    there. This finder is installed only when this ``__init__`` sits in such a checkout and
    maps exactly those three names (their sub-packages follow from their ``__path__``); no
    other folder of the checkout becomes importable. An editable install maps the same
    names to the same folders, so both agree.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def find_spec(self, fullname, path=None, target=None):
        prefix, _, name = fullname.partition(".")
        if prefix != __name__ or name not in _MAPPED:
            return None
        folder = self.root / _MAPPED[name]
        return importlib.util.spec_from_file_location(
            fullname, folder / "__init__.py", submodule_search_locations=[str(folder)]
        )


def _install_source_tree_finder() -> None:
    here = Path(__file__).resolve().parent
    root = here.parent
    if not (root / "pyproject.toml").is_file() or not all((root / d / "__init__.py").is_file() for d in _MAPPED.values()):
        return  # an installed copy: the mapped packages sit inside this folder
    if any(isinstance(f, _SourceTreeFinder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _SourceTreeFinder(root))


_install_source_tree_finder()

from .errors import (  # noqa: E402
    AutoDecoError,
    CheckpointError,
    InvalidLogitsError,
    InvalidParameterError,
    ShapeError,
    UnsafeCheckpointError,
)
from .heads import AutoDecoHeads, HeadsConfig, load_heads  # noqa: E402
from .interfaces import GenerationResult, Heads, StepOutput, TokenStep  # noqa: E402
from .policy import DecodingPolicy  # noqa: E402
from .reference import (  # noqa: E402
    GREEDY_TEMPERATURE,
    next_token_distribution,
    nucleus_mask,
    probability_stats,
    soft_top_p,
    temperature_probs,
)
from .sampler import AutoDecoSampler, sample  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "AutoDecoError",
    "AutoDecoHeads",
    "AutoDecoSampler",
    "CheckpointError",
    "DecodingPolicy",
    "GREEDY_TEMPERATURE",
    "GenerationResult",
    "Heads",
    "HeadsConfig",
    "InvalidLogitsError",
    "InvalidParameterError",
    "ShapeError",
    "StepOutput",
    "TokenStep",
    "UnsafeCheckpointError",
    "load_heads",
    "next_token_distribution",
    "nucleus_mask",
    "probability_stats",
    "sample",
    "soft_top_p",
    "temperature_probs",
]
