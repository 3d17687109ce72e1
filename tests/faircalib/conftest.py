"""Fixtures shared by the library tests: one torch thread each, tiny random models with LLM-like outlier channels."""
from __future__ import annotations

import pytest
import torch

from faircalib.models import tiny_model


@pytest.fixture(autouse=True)
def _library_tests_on_one_thread(one_thread):
    """Every library test runs on one torch thread (tests/conftest.py `one_thread`)."""


def outlier_model(arch: str = "llada", seed: int = 0, n_layers: int = 2, **kw):
    """tiny_model with a few input channels of every block norm scaled up (activation outliers, as real
    LLMs have), so quantization error differs visibly between methods."""
    m = tiny_model(arch, seed=seed, n_layers=n_layers, **kw)
    g = torch.Generator().manual_seed(seed + 7)
    with torch.no_grad():
        for block in m.blocks:
            for norm in ("attn_norm", "mlp_norm"):
                w = block.role(norm).weight
                idx = torch.randperm(w.numel(), generator=g)[:3]
                w[idx] *= 12.0
    return m


@pytest.fixture
def calib_ids():
    return torch.randint(0, 95, (8, 24), generator=torch.Generator().manual_seed(0))


@pytest.fixture
def eval_ids():
    return torch.randint(0, 95, (8, 24), generator=torch.Generator().manual_seed(1))


@pytest.fixture
def make_outlier_model():
    return outlier_model
