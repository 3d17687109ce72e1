"""Fixtures for the diagnostics tests: constructed trajectories and a fixed-logit fake student."""
from __future__ import annotations

import pytest
import torch
from torch import nn


class FixedLogits(nn.Module):
    """A 'model' whose window logits are a fixed (B, L, V) table whatever the state (hand-known answers)."""

    def __init__(self, table: torch.Tensor, mask_token_id: int):
        super().__init__()
        self.register_buffer("table", table.float())
        self.anchor = nn.Parameter(torch.zeros(()))  # gives the module a device
        self.mask_token_id = mask_token_id
        self.calls = 0

    def forward(self, ids, attention_mask=None, window=None):
        self.calls += 1
        start, end = window
        assert end - start == self.table.shape[1] and ids.shape[0] == self.table.shape[0]
        return self.table.clone()


@pytest.fixture
def fixed_logits():
    return FixedLogits
