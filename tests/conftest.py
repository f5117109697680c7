"""Fixtures shared by the test files."""

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module: on a shared 2-core machine two OpenMP threads stall each other
    at every barrier (small models run up to 50x slower). Results are the same bits with 1 or 2
    threads (``core.runtime.batching``; test_reconstruct_job checks it with two)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
