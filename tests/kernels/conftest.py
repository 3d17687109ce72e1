"""Fixtures for the kernel tests: Triton runs on CUDA when present, else in the interpreter on CPU
(tests/conftest.py sets TRITON_INTERPRET=1 before triton is imported when there is no CUDA)."""
from __future__ import annotations

import pytest
import torch
from faircalib.kernels import interpreter_enabled, triton_available


@pytest.fixture(scope="session")
def dev() -> torch.device:
    """Device the Triton kernels run on in these tests."""
    if not triton_available():
        pytest.skip("triton is not installed")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if not interpreter_enabled():
        pytest.skip("no CUDA and TRITON_INTERPRET is not set")
    return torch.device("cpu")


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)
