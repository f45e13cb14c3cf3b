"""Shared test settings: a deterministic Hypothesis profile so CI never flakes on a new seed."""

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    max_examples=int(os.environ.get("AUTODECO_HYPOTHESIS_EXAMPLES", "150")),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.load_profile("ci")


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
