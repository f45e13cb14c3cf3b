"""Shared test settings.

Hypothesis is *not* derandomised: every run draws new examples from one session seed, which
is printed in the pytest header and under every failing test, so a failure replays exactly
with ``pytest --hypothesis-seed=<seed>`` (or ``AUTODECO_HYPOTHESIS_SEED=<seed>``). Failures
also print ``@reproduce_failure`` blobs.
"""

import os
import random

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


@pytest.fixture(autouse=True)
def _fresh_dynamo_caches():
    """Each test starts with torch.compile's caches as a fresh process has them: the compiled
    step's graphs are keyed on the heads module and policy a test uses, and many tests in one
    process would otherwise add up to Dynamo's recompile limit (a hard error with fullgraph)."""
    yield
    import sys

    dynamo = sys.modules.get("torch._dynamo")
    if dynamo is not None:
        dynamo.reset()
