"""Fixtures shared by several test files."""

import pytest


@pytest.fixture
def one_torch_thread():
    """Run a test on one torch CPU thread (two OpenMP threads stall on shared cores)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
