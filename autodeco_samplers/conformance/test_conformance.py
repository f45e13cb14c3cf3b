"""The shipped suite: ``pytest --pyargs autodeco_samplers.conformance``.

Each engine is one parameter; every level the engine implements is checked, levels it does
not implement are skipped with a reason.
"""

import pytest

from autodeco_samplers.conformance.runner import run_engine


@pytest.mark.parametrize("level", ["kernel", "sampling", "end-to-end"])
def test_engine_conforms(autodeco_engine, autodeco_examples, autodeco_seed, level):
    if not autodeco_engine.supports(level):
        pytest.skip(f"{autodeco_engine.name} does not implement the {level} level")
    (result,) = run_engine(autodeco_engine, (level,), autodeco_examples, seed=autodeco_seed)
    assert result.verdict == "pass", f"{result.engine} / {level}: {result.reason}"
