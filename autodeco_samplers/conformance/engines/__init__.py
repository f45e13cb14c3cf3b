"""The engine interface of the conformance suite, and the engines the project ships.

An engine is checked at up to three levels:

* ``kernel(hidden, logits, heads, policy)``: the distribution the engine would sample the
  next token from, with the ``T``/``P`` it predicted and used (a :class:`~autodeco_samplers.core.interfaces.NumpyStep` with ``probs``).
* ``end_to_end(...)``: a model built from the same seeded weights in the engine, a prompt and a
  forced token path; per step the same outputs plus the engine's own logits.
* ``draw(hidden, logits, heads, policy, n, seed)``: ``n`` draws from the engine's *real*
  sampler for one step (row 0), compared with its distribution by a G-test.

Outsiders subclass :class:`ConformanceEngine` (or duck-type it) and run
:func:`autodeco_samplers.conformance.assert_conforms` or the pytest plugin against it.
"""

from __future__ import annotations

import importlib
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from autodeco_samplers.heads import AutoDecoHeads
from autodeco_samplers.core.interfaces import NumpyStep
from autodeco_samplers.core.policy import DecodingPolicy
from autodeco_samplers.core.step import numpy_heads_policy, numpy_step_distribution, numpy_step_sample


class ConformanceEngine:
    """Base class; override the levels the engine supports (others report 'not supported')."""

    name: str = "engine"
    #: modules the engine needs; the default :meth:`availability` imports each of them
    requires: Tuple[str, ...] = ()
    #: the reason given when one of :attr:`requires` fails to import (``{exc}``: the ImportError)
    missing_reason: str = "not installed ({exc})"

    def availability(self) -> Tuple[bool, str]:
        """``(True, "")`` if the engine can run here, else ``(False, reason)``: by default,
        whether every module in :attr:`requires` imports."""
        for module in self.requires:
            try:
                importlib.import_module(module)
            except ImportError as exc:
                return False, self.missing_reason.format(exc=exc)
        return True, ""

    def kernel(self, hidden: np.ndarray, logits: np.ndarray, heads: AutoDecoHeads, policy: DecodingPolicy) -> NumpyStep:
        raise NotImplementedError

    def draw(
        self, hidden: np.ndarray, logits: np.ndarray, heads: AutoDecoHeads, policy: DecodingPolicy, n: int, seed: int
    ) -> np.ndarray:
        raise NotImplementedError

    def end_to_end(self, workdir, steps: int, seed: int) -> List[dict]:
        """Per step: ``{"logits", "hidden", "probs", "T_pred", "P_pred", "T", "P"}`` (numpy)."""
        raise NotImplementedError

    def supports(self, level: str) -> bool:
        method = {"kernel": "kernel", "sampling": "draw", "end-to-end": "end_to_end"}[level]
        return getattr(type(self), method) is not getattr(ConformanceEngine, method)


class NumpyReferenceEngine(ConformanceEngine):
    """The NumPy reference itself, in float32 (the suite's own sanity row): the NumPy step with
    ``exact=True`` (:mod:`autodeco_samplers.core.step`)."""

    name = "numpy"

    def kernel(self, hidden, logits, heads, policy):
        return numpy_step_distribution(hidden, logits, heads, policy, exact=True)

    def draw(self, hidden, logits, heads, policy, n, seed):
        rng = np.random.default_rng(seed)
        st = numpy_step_sample(np.repeat(hidden[:1], n, 0), np.repeat(logits[:1], n, 0), heads, policy, rng, exact=True)
        return st.token_ids


class TorchEngine(ConformanceEngine):
    """The torch step (:mod:`autodeco_samplers.core.step`: heads module + policy + sort-free nucleus) on a device."""

    def __init__(self, device: str = "cpu", kernel: str = "torch") -> None:
        self.device = device
        self.step_path = kernel  # the step's path after the heads (core.step.step_kernel)
        self.name = f"torch-{device}" + ("" if kernel == "torch" else f"-{kernel}")

    def availability(self):
        try:
            import torch
        except ImportError:
            return False, "torch is not installed"
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            return False, "no CUDA device"
        if self.step_path == "triton":
            from autodeco_samplers.core.triton_step import triton_available

            ok, reason = triton_available(self.device)
            if not ok:
                return False, reason
        return True, ""

    def _dist(self, hidden, logits, heads, policy):
        import torch

        from autodeco_samplers.heads import AutoDecoHeadsModule
        from autodeco_samplers.core.step import torch_step_logits

        module = AutoDecoHeadsModule.from_numpy(heads).to(self.device)
        h = torch.from_numpy(np.asarray(hidden, np.float32)).to(self.device)
        l = torch.from_numpy(np.asarray(logits, np.float32)).to(self.device)
        with torch.no_grad():
            st = torch_step_logits(h, l, module, policy, check=True, kernel=self.step_path)
            probs = torch.softmax(st.logits, dim=-1)
        return probs, (st.T_pred, st.P_pred, st.T, st.P)

    def kernel(self, hidden, logits, heads, policy):
        probs, rest = self._dist(hidden, logits, heads, policy)
        return NumpyStep(*(t.cpu().numpy() for t in rest), probs=probs.cpu().numpy())

    def draw(self, hidden, logits, heads, policy, n, seed):
        import torch

        from autodeco_samplers.heads import AutoDecoHeadsModule
        from autodeco_samplers.core.step import torch_step_sample

        module = AutoDecoHeadsModule.from_numpy(heads).to(self.device)
        h = torch.from_numpy(np.asarray(hidden[:1], np.float32)).to(self.device).expand(n, -1)
        l = torch.from_numpy(np.asarray(logits[:1], np.float32)).to(self.device).expand(n, -1)
        gen = torch.Generator(device=self.device).manual_seed(seed)
        with torch.no_grad():
            return torch_step_sample(h, l.contiguous(), module, policy, gen, kernel=self.step_path).token_ids.cpu().numpy()


class WrongRuleEngine(ConformanceEngine):
    """A deliberately wrong rule, to show that the suite catches it.

    ``rule="top_p_before_temperature"``: the nucleus is taken on ``softmax(l)`` and the
    temperature applied afterwards (llama-cpp-python's default chain order).
    ``rule="drop_crossing"``: keeps only tokens whose *inclusive* prefix sum is ``<= P``
    (the ``alpha -> inf`` limit of the training mask), dropping the crossing token.
    """

    def __init__(self, rule: str) -> None:
        if rule not in ("top_p_before_temperature", "drop_crossing"):
            raise ValueError(f"unknown wrong rule {rule!r}")
        self.rule = rule
        self.name = f"wrong:{rule}"

    def _probs(self, logits, T, P):
        from autodeco_samplers.core.reference import descending_order, nucleus_mask, temperature_probs

        logits = np.atleast_2d(np.asarray(logits, np.float64))
        if self.rule == "top_p_before_temperature":
            keep = nucleus_mask(temperature_probs(logits, np.ones(len(logits))), P)
            q = temperature_probs(np.where(keep, logits, -np.inf), T)
        else:
            q = temperature_probs(logits, T)
            order = descending_order(q)
            inclusive = np.cumsum(np.take_along_axis(q, order, 1), 1)
            keep_sorted = inclusive <= np.asarray(P)[:, None]
            keep_sorted[:, 0] = True
            keep = np.zeros_like(keep_sorted)
            np.put_along_axis(keep, order, keep_sorted, 1)
            q = np.where(keep, q, 0.0)
        return q / q.sum(1, keepdims=True)

    def kernel(self, hidden, logits, heads, policy):
        st = numpy_heads_policy(hidden, logits, heads, policy)
        return NumpyStep(st.T_pred, st.P_pred, st.T, st.P, probs=self._probs(logits, st.T, st.P))

    def draw(self, hidden, logits, heads, policy, n, seed):
        out = self.kernel(hidden[:1], logits[:1], heads, policy)
        return np.random.default_rng(seed).choice(out.probs.shape[1], size=n, p=out.probs[0])


EngineFactory = Callable[[], ConformanceEngine]


def _lazy(module: str, attr: str) -> EngineFactory:
    def make() -> ConformanceEngine:
        import importlib

        return getattr(importlib.import_module(module), attr)()

    return make


BUILTIN_ENGINES: Dict[str, EngineFactory] = {
    "numpy": NumpyReferenceEngine,
    "torch-cpu": lambda: TorchEngine("cpu"),
    "torch-cuda": lambda: TorchEngine("cuda"),
    "torch-cuda-triton": lambda: TorchEngine("cuda", kernel="triton"),
}


def get_engine(name: str) -> Optional[ConformanceEngine]:
    """Instantiate a registered engine by name (adapters register theirs in ``ENGINE_MODULES``)."""
    factories = dict(BUILTIN_ENGINES)
    for engine_name, (module, attr) in ENGINE_MODULES.items():
        factories.setdefault(engine_name, _lazy(module, attr))
    if name not in factories:
        raise KeyError(f"unknown conformance engine {name!r}; known: {sorted(factories)}")
    return factories[name]()


# Adapter engines live next to their adapters, imported only when asked for.
ENGINE_MODULES: Dict[str, Tuple[str, str]] = {
    "transformers": ("autodeco_samplers.conformance.engines.transformers", "TransformersEngine"),
    "llama-cpp": ("autodeco_samplers.conformance.engines.llama_cpp", "LlamaCppEngine"),
    "sglang-transform": ("autodeco_samplers.conformance.engines.sglang", "SGLangTransformEngine"),
    "vllm": ("autodeco_samplers.conformance.engines.vllm", "VLLMEngine"),
    "mlx": ("autodeco_samplers.conformance.engines.mlx", "MLXEngine"),
}


def engine_names() -> List[str]:
    return list(BUILTIN_ENGINES) + [n for n in ENGINE_MODULES if n not in BUILTIN_ENGINES]
