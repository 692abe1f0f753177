"""Shared test setup: one torch thread, the `nas` entry point, a Ray instance per module, a
working folder per test."""
import logging

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


@pytest.fixture(scope="module")
def ray_cluster():
    """A 2-CPU Ray for the tests of one module (searches join it instead of starting their own)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run the test in its own folder (studies/ and tables land there)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
