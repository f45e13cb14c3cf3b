"""Exceptions raised by autodeco-samplers.

Every error names what is wrong (the file, tensor, row or shape) so that a user can fix the
input without reading our code. All derive from :class:`AutoDecoError`; the ones about bad
values also derive from :class:`ValueError` so generic handlers keep working.
"""

from __future__ import annotations


class AutoDecoError(Exception):
    """Base class of every error this library raises on purpose."""


class CheckpointError(AutoDecoError, ValueError):
    """A checkpoint is missing, truncated, foreign, or holds head tensors of the wrong shape."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint in a pickle-based format (``.bin``, ``.pt``, ``.pth``, ...).

    Such files can run arbitrary code when loaded; this library never unpickles them.
    """


class ShapeError(AutoDecoError, ValueError):
    """Inputs whose shapes disagree, e.g. a hidden size that does not match the heads."""


class InvalidLogitsError(AutoDecoError, ValueError):
    """Logits that cannot define a distribution: NaN, +inf, or a row that is all -inf."""


class InvalidParameterError(AutoDecoError, ValueError):
    """A temperature, top-p or knob outside its domain (negative, NaN, ...)."""


class UsageError(AutoDecoError, ValueError):
    """A command line that cannot be run as given: a flag value outside its domain, flags
    that do not go together, an unknown engine name. The CLI exits with status 2 on it."""


class MissingDependencyError(AutoDecoError, ImportError):
    """An optional dependency is not installed; the message names the extra to install.

    ``extra`` is the name in ``pip install 'autodeco-samplers[EXTRA]'`` (``None`` when the
    package is not part of any extra, e.g. SGLang, which needs its own environment)."""

    def __init__(self, message: str, *, package: str = "", extra: "str | None" = None) -> None:
        super().__init__(message)
        self.package = package
        self.extra = extra
