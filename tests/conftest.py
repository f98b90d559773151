import os

import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=int(os.environ.get("LORM_HYPOTHESIS_EXAMPLES", "150")), deadline=None,
    suppress_health_check=[HealthCheck.too_slow], derandomize=True)
settings.load_profile("ci")

HAS_CUDA = torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords and not HAS_CUDA:
            item.add_marker(skip)


def devices():
    """Devices every op test runs on: CPU always, CUDA when a GPU is present."""
    return ["cpu"] + (["cuda"] if HAS_CUDA else [])


TORCH_THREADS = torch.get_num_threads()


@pytest.fixture(autouse=True)
def restore_torch_threads():
    """A run sets torch's thread count from its config (num_threads), also inside
    module-scoped fixtures; every test starts from the process's own count, since
    results that are round-off apart depend on it."""
    torch.set_num_threads(TORCH_THREADS)
    yield
    torch.set_num_threads(TORCH_THREADS)
