"""Errors of the SGLang adapter (no torch, no SGLang). The served-folder format (the
``autodeco`` block of ``config.json``) is :mod:`autodeco_samplers.heads.io.served`."""

from __future__ import annotations

from autodeco_samplers.core.errors import AutoDecoError

__all__ = ["SGLangModeError"]


class SGLangModeError(AutoDecoError, ValueError):
    """SGLang asked the AutoDeco model for a mode it cannot serve correctly (speculative
    decoding with aux hidden states, FULL hidden capture, multi-item scoring, ...)."""
