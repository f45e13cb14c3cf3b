"""Conformance suite: checks that an engine yields the canonical AutoDeco distribution.

* :mod:`.checker`: the one definition of agreement (kept sets up to eps at the boundary,
  total-variation distance, head tolerances);
* :mod:`.strategies`: Hypothesis strategies for decoding cases, heads and request knobs;
* :mod:`.engines`: the engine interface (kernel, sampling, end-to-end levels) and engines;
* :mod:`.runner`: ``run_engine``, ``assert_conforms``, the table printed by
  ``autodeco conformance``;
* ``pytest --pyargs autodeco_samplers.conformance`` runs the suite over every engine present.

Needs the ``conformance`` extra (hypothesis, pytest, scipy).
"""

from autodeco_samplers.conformance.checker import Verdict, check_distribution, check_heads
from autodeco_samplers.core.interfaces import NumpyStep

from autodeco_samplers.conformance.engines import ConformanceEngine

__all__ = [
    "ConformanceEngine",
    "NumpyStep",
    "Verdict",
    "assert_conforms",
    "check_distribution",
    "check_heads",
    "run_engine",
]


def __getattr__(name):
    if name in ("assert_conforms", "run_engine"):
        from autodeco_samplers.conformance import runner

        return getattr(runner, name)
    raise AttributeError(name)
