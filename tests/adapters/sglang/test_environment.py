"""The SGLang test environment: reported as a skip (with the reason) where SGLang is missing."""

import importlib.metadata as md

import pytest


def test_sglang_environment(sglang_missing):
    if sglang_missing:
        pytest.skip(sglang_missing)
    assert md.version("sglang") == "0.5.23"
    assert md.version("torch").split("+")[0] == "2.14.1"
    assert md.version("transformers") == "5.19.0"
    import autodeco_samplers.adapters.sglang as adapter

    assert adapter.EXTERNAL_MODEL_PACKAGE == "autodeco_samplers.adapters.sglang.models"
