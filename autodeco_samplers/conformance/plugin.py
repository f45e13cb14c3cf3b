"""pytest plugin: ``--autodeco-engines`` / ``--autodeco-examples`` and the ``autodeco_engine`` fixture.

Registered through the ``pytest11`` entry point, so any project with autodeco-samplers
installed can write::

    from autodeco_samplers.conformance import assert_conforms

    def test_my_engine_conforms():
        assert_conforms(MyEngine())          # a ConformanceEngine subclass

and ``pytest --pyargs autodeco_samplers.conformance --autodeco-engines numpy torch-cpu``
runs the shipped suite over the named (default: all known) engines. An engine that cannot
run here is reported as *skipped* with its reason, never as passed. The kernel level is not
derandomised: its Hypothesis seed is printed in the header (and in a failure's message) and
``--autodeco-seed N`` replays it.
"""

from __future__ import annotations


def pytest_addoption(parser):
    group = parser.getgroup("autodeco", "AutoDeco conformance")
    group.addoption(
        "--autodeco-engines",
        nargs="+",
        default=None,
        help="conformance engines to run, space- or comma-separated (default: all known)",
    )
    group.addoption("--autodeco-examples", type=int, default=60, help="Hypothesis examples per engine (kernel level)")
    group.addoption(
        "--autodeco-seed",
        type=int,
        default=None,
        help="Hypothesis seed of the kernel level (default: $AUTODECO_CONFORMANCE_SEED, else a fresh one, "
        "printed in the header and in a failure's message for replay)",
    )


def pytest_report_header(config):
    if config.getoption("autodeco_engines", None) is None and config.getoption("autodeco_seed", None) is None:
        return None
    from autodeco_samplers.conformance.runner import conformance_seed

    seed = conformance_seed(config.getoption("autodeco_seed"))
    config._autodeco_seed = seed
    return f"autodeco conformance: kernel Hypothesis seed {seed} (replay: --autodeco-seed {seed})"


def pytest_generate_tests(metafunc):
    if "autodeco_engine_name" in metafunc.fixturenames:
        from autodeco_samplers.conformance.engines import engine_names

        names = selected_engines(metafunc.config.getoption("autodeco_engines"), engine_names())
        metafunc.parametrize("autodeco_engine_name", names)


def selected_engines(given, known):
    """The engines named by ``--autodeco-engines`` (``a b`` or ``a,b``; all ``known`` when
    not given); an unknown name is a usage error that lists the known ones."""
    import pytest

    if not given:
        return list(known)
    names = [n.strip() for item in given for n in item.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise pytest.UsageError(f"--autodeco-engines: unknown engine(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return names


def _engine(name):
    import pytest

    from autodeco_samplers.conformance.engines import get_engine

    engine = get_engine(name)
    ok, reason = engine.availability()
    if not ok:
        pytest.skip(f"{engine.name}: {reason}")
    return engine


try:
    import pytest

    @pytest.fixture
    def autodeco_engine(autodeco_engine_name):
        """The conformance engine under test (skipped with its reason when unavailable)."""
        return _engine(autodeco_engine_name)

    @pytest.fixture
    def autodeco_examples(request):
        return request.config.getoption("autodeco_examples")

    @pytest.fixture
    def autodeco_seed(request):
        """The kernel level's Hypothesis seed: ``--autodeco-seed``, else the one in the header,
        else ``None`` (a fresh one per run, named in a failure's message)."""
        seed = getattr(request.config, "_autodeco_seed", None)
        return seed if seed is not None else request.config.getoption("autodeco_seed")

except ImportError:  # pragma: no cover - pytest is what loads this module
    pass
