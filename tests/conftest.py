"""Shared test settings.

Hypothesis is *not* derandomised: every run draws new examples from one session seed, which
is printed in the pytest header and under every failing test, so a failure replays exactly
with ``pytest --hypothesis-seed=<seed>`` (or ``AUTODECO_HYPOTHESIS_SEED=<seed>``). Failures
also print ``@reproduce_failure`` blobs.
"""

import os
import random
import sys

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=False,
    database=None,
    deadline=None,
    max_examples=int(os.environ.get("AUTODECO_HYPOTHESIS_EXAMPLES", "150")),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.load_profile("ci")
_SEED = {}


def pytest_configure(config):
    import hypothesis.core

    given = config.getoption("--hypothesis-seed", default=None)
    if given is not None:
        seed = int(given)
    else:
        seed = int(os.environ.get("AUTODECO_HYPOTHESIS_SEED") or random.SystemRandom().randrange(2**32))
        hypothesis.core.global_force_seed = seed
    _SEED["seed"] = seed


def pytest_report_header(config):
    seed = _SEED.get("seed")
    return f"hypothesis session seed: {seed} (replay a failure: pytest --hypothesis-seed={seed})"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and call.when == "call":
        seed = _SEED.get("seed")
        report.sections.append(("hypothesis seed", f"replay with: pytest {item.nodeid!r} --hypothesis-seed={seed}"))


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module's tiny torch models on one thread (fastest on a shared 2-core machine)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Files the library caches on first use (the default model's GGUF) go to a temp folder."""
    folder = tmp_path_factory.mktemp("autodeco-cache")
    previous = os.environ.get("AUTODECO_CACHE")
    os.environ["AUTODECO_CACHE"] = str(folder)
    yield
    if previous is None:
        os.environ.pop("AUTODECO_CACHE", None)
    else:
        os.environ["AUTODECO_CACHE"] = previous


def _dynamo_compiles() -> int:
    """How often torch.compile (Dynamo) has compiled in this process: graphs made plus frames
    tried (``fullgraph=True`` counts only the former); cache hits count neither. 0 while
    ``torch._dynamo`` is not imported."""
    if "torch._dynamo" not in sys.modules:
        return 0
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"] + counters["frames"]["total"]


@pytest.fixture(autouse=True)
def _fresh_dynamo_caches_after_compiling():
    """Every test starts with torch.compile's caches as a fresh process has them.

    Why: Dynamo keeps one cache entry per variant of a compiled function (input shapes, the
    heads module and policy the compiled step reads), and past
    ``torch._dynamo.config.recompile_limit`` (8) variants of one function it stops compiling,
    a hard error with ``fullgraph=True``. The compiled-step tests of many shapes and policies
    would add up to that limit in one process. So after a test that compiled something new,
    the caches are reset (``torch._dynamo.reset()``); tests that compile nothing leave the
    (then empty) caches alone and pay nothing.
    """
    before = _dynamo_compiles()
    yield
    if _dynamo_compiles() != before:
        sys.modules["torch._dynamo"].reset()
