"""Shared test setup: one torch thread, and the `nas` entry point."""
import pytest
import torch

from nas import cli


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Tiny tensors gain nothing from a second OpenMP thread, and on a busy 2-core box every op
    then waits for a descheduled thread (seen: 15 ms per tiny conv). Code that times itself sets
    its own thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def nas_main():
    return cli.main
