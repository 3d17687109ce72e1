"""Fixtures for the decoding-engine tests: a handcrafted "model" whose window logits are a fixed table,
so which position commits at which step can be computed by hand."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

V = 6  # tokens 0..4 are real, 5 is [MASK]
MASK = 5


class TableModel(nn.Module):
    """Window position i always gets logits table[i] (L, V), whatever the state; records every call."""

    def __init__(self, table: torch.Tensor, default_policy: str = "low_confidence", mask_id: int = MASK):
        super().__init__()
        self.register_buffer("table", table.float())
        self.mask_token_id = mask_id
        self.default_policy = default_policy
        self.config = SimpleNamespace(logits_shifted=False, pad_token_id=0, mask_token_id=mask_id)
        self.calls: list[tuple[torch.Tensor, tuple[int, int]]] = []

    def forward(self, input_ids, attention_mask=None, window=None):
        start, end = window
        assert end - start == self.table.shape[0], "engine must request exactly the answer window"
        self.calls.append((input_ids.clone(), window))
        return self.table.unsqueeze(0).expand(input_ids.shape[0], -1, -1).clone()  # (B, L, V)


def peaked_table(conf: list[float], tokens: list[int]) -> torch.Tensor:
    """Row i: logit conf[i] on tokens[i], 0 on the other real tokens (higher conf = higher top-1 prob)."""
    t = torch.zeros(len(conf), V)
    for i, (c, tok) in enumerate(zip(conf, tokens)):
        t[i, tok] = c
    t[:, MASK] = 3.0  # large on purpose: policies must never write [MASK]
    return t


def prob_table(rows: list[list[float]]) -> torch.Tensor:
    """Row i: logits log(p) for the given distribution over the 5 real tokens."""
    p = torch.tensor(rows, dtype=torch.float64)
    t = torch.zeros(len(rows), V)
    t[:, :5] = p.log().float()
    t[:, MASK] = 0.0
    return t


@pytest.fixture(scope="session")
def fakes():
    """The handcrafted-model helpers (test modules cannot import conftest under --import-mode=importlib)."""
    return SimpleNamespace(TableModel=TableModel, peaked_table=peaked_table, prob_table=prob_table, MASK=MASK, V=V)


@pytest.fixture(scope="module")
def tiny_pair():
    """Tiny random LLaDA and Dream models with spread-out logits (init std 0.2) so greedy orderings are
    not decided by float rounding."""
    from faircalib.models import tiny_model

    return {arch: tiny_model(arch).init_weights(0, std=0.2).eval() for arch in ("llada", "dream")}


@pytest.fixture(scope="module")
def prompts():
    g = torch.Generator().manual_seed(0)
    return [torch.randint(2, 90, (n,), generator=g) for n in (5, 9, 3, 7)]
