"""The vLLM adapter's pieces without an engine: registry, prepare CLI, kernel conformance."""

from __future__ import annotations

import json

import numpy as np
import pytest


def test_plugin_registers_our_classes_under_stock_names():
    from vllm import ModelRegistry

    from autodeco_samplers.adapters.vllm.models import ARCHITECTURES
    from autodeco_samplers.adapters.vllm.plugin import register

    register()
    for arch, target in ARCHITECTURES.items():
        module, name = target.split(":")
        assert name == arch
        import importlib

        ours = getattr(importlib.import_module(module), name)
        assert ours.__name__ == arch
        from autodeco_samplers.adapters.vllm.model_mixin import AutoDecoModelMixin

        assert issubclass(ours, AutoDecoModelMixin)
        stock = ours.__bases__[1]  # (AutoDecoModelMixin, stock class)
        assert stock.__name__ == arch and stock.__module__.startswith("vllm.model_executor.models.")
        assert ModelRegistry._try_load_model_cls(arch) is ours


def test_plugin_chooses_the_v1_runner_unless_the_environment_chose(tmp_path):
    """vLLM 0.32 with Triton (GPUs) defaults to its V2 runner, which refuses the package's
    V1-interface logits-processor plugin for every model: ``register`` sets
    ``VLLM_USE_V2_MODEL_RUNNER=0`` when unset, and vLLM's own config reads it as "use V1"."""
    import os
    import subprocess
    import sys

    code = (
        "from autodeco_samplers.adapters.vllm.plugin import register; register(); "
        "import os, vllm.envs as e; print(os.environ['VLLM_USE_V2_MODEL_RUNNER'], e.VLLM_USE_V2_MODEL_RUNNER)"
    )
    env = {k: v for k, v in os.environ.items() if k != "VLLM_USE_V2_MODEL_RUNNER"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["0", "False"]
    chosen = subprocess.run([sys.executable, "-c", code], env=dict(env, VLLM_USE_V2_MODEL_RUNNER="1"),
                            capture_output=True, text=True, timeout=300)
    assert chosen.returncode == 0, chosen.stderr[-2000:]
    assert chosen.stdout.split()[-2:] == ["1", "True"]


def test_prepare_vllm_cli_writes_servable_folder(tmp_path):
    from _models import save_base, save_heads

    from autodeco_samplers.frontends.cli import main

    base = save_base(tmp_path / "base")
    heads = save_heads(tmp_path / "heads")
    gen = json.loads((base / "generation_config.json").read_text())
    gen.update(temperature=0.6, top_p=0.95)
    (base / "generation_config.json").write_text(json.dumps(gen))
    assert main(["prepare-vllm", str(base), "--out", str(tmp_path / "out"), "--heads", str(heads), "--top-p", "0.9"]) == 0
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert cfg["model_type"] == "llama" and cfg["architectures"] == ["LlamaForCausalLM"]
    assert cfg["autodeco"]["policy"]["top_p"] == 0.9
    assert cfg["autodeco"]["temperature_width"] == 32
    out_gen = json.loads((tmp_path / "out" / "generation_config.json").read_text())
    assert "temperature" not in out_gen and "top_p" not in out_gen  # vLLM would take them as request defaults


def test_kernel_conformance():
    from autodeco_samplers.conformance.engines import get_engine
    from autodeco_samplers.conformance.runner import run_kernel

    result = run_kernel(get_engine("vllm"), examples=150)
    assert result.verdict == "pass", result.reason


@pytest.mark.parametrize("vocab", [32000, 152064])
def test_step_at_real_vocabulary_sizes(vocab):
    """The step ``compute_logits`` runs (``torch_step_logits``) + vLLM's own logprob function
    give the reference distribution at real vocabulary sizes (a peaked row, a flat row, a
    greedy row)."""
    import torch
    from vllm.v1.sample.sampler import Sampler

    from autodeco_samplers.conformance.checker import check_distribution
    from autodeco_samplers.heads import AutoDecoHeadsModule
    from autodeco_samplers.heads.model.init import init_heads
    from autodeco_samplers.heads.model.numpy_heads import AutoDecoHeads
    from autodeco_samplers.core.step import torch_step_logits
    from autodeco_samplers.core.policy import DecodingPolicy

    rng = np.random.default_rng(vocab)
    H = 64
    config, tensors = init_heads(H, width=32, seed=3)
    heads = AutoDecoHeads(config, tensors)
    hidden = rng.normal(0, 1, (3, H)).astype(np.float32)
    logits = np.stack([rng.normal(0, 4, vocab), rng.normal(0, 0.3, vocab), rng.normal(0, 2, vocab)]).astype(np.float32)
    policy = DecodingPolicy()
    with torch.no_grad():
        step = torch_step_logits(torch.from_numpy(hidden), torch.from_numpy(logits), AutoDecoHeadsModule.from_numpy(heads),
                                 policy, temperature=torch.tensor([1.0, 1.0, 0.0]), top_p=torch.tensor([1.0, 1.0, 1.0]))
        probs = Sampler.compute_logprobs(step.logits).exp().double().numpy()
    T_pred, P_pred = heads.predict(hidden, logits)
    T, P = policy.apply(T_pred.astype(np.float64), P_pred.astype(np.float64), np.array([1.0, 1.0, 0.0]), np.ones(3))
    np.testing.assert_allclose(step.T.numpy(), T, atol=1e-5)
    verdict = check_distribution(logits, T.astype(np.float32), P.astype(np.float32), probs)
    assert verdict.ok, verdict.describe("vllm")
    assert probs[2].max() == 1.0 and probs[2].argmax() == logits[2].argmax()


def test_request_knobs_are_validated_with_their_name():
    from vllm import SamplingParams

    from autodeco_samplers.adapters.vllm.knobs import AutoDecoRequestKnobs

    AutoDecoRequestKnobs.validate_params(SamplingParams(extra_args={"autodeco_temperature": 0.5}))
    for bad in ({"autodeco_temperature": -1}, {"autodeco_top_p": "x"}, {"autodeco_temperature": float("inf")}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            AutoDecoRequestKnobs.validate_params(SamplingParams(extra_args=bad))


@pytest.mark.parametrize("extra", [{"autodeco_tempreature": 0.5}, {"autodeco_temperature": 0.5, "autodeco_topp": 1.0},
                                   {"autodeco_": 1}])
def test_unknown_autodeco_keys_are_refused_naming_the_known_ones(extra):
    from vllm import SamplingParams

    from autodeco_samplers.adapters.vllm.knobs import AutoDecoRequestKnobs, request_multipliers

    bad = next(k for k in extra if k not in ("autodeco_temperature", "autodeco_top_p"))
    with pytest.raises(ValueError, match=rf"unknown AutoDeco request key.*{bad}.*known keys are "
                                         r"autodeco_temperature, autodeco_top_p"):
        AutoDecoRequestKnobs.validate_params(SamplingParams(extra_args=extra))
    # other plugins' keys pass untouched, and the known ones still work beside them
    params = SamplingParams(extra_args={"autodeco_top_p": 0.5, "other_plugin_key": "x"})
    AutoDecoRequestKnobs.validate_params(params)
    assert request_multipliers(params) == (None, 0.5)


def test_conformance_end_to_end_on_a_real_engine(tmp_path):
    """``autodeco conformance --engines vllm --levels end-to-end``: a real engine's trace (raw
    logits, predicted / used T and P) and returned logprobs, checked against the reference."""
    from autodeco_samplers.conformance.engines import get_engine
    from autodeco_samplers.conformance.runner import run_end_to_end

    result = run_end_to_end(get_engine("vllm"), steps=8, seed=0, workdir=tmp_path)
    assert result.verdict == "pass", result.reason
    assert result.cases == 8
