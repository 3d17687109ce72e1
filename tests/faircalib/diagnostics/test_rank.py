"""Spearman / Pearson of prior curves, with ties, by hand."""
from __future__ import annotations

import math

import pytest
import torch

from faircalib.diagnostics import average_ranks, pearson, rank_consistency, spearman


def test_average_ranks_share_ties():
    assert average_ranks(torch.tensor([3.0, 1.0, 2.0, 2.0])).tolist() == [4.0, 1.0, 2.5, 2.5]


def test_rank_consistency_by_hand():
    a = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert rank_consistency(a, 10 * a) == {"spearman": pytest.approx(1.0), "pearson": pytest.approx(1.0)}
    assert spearman(a, -a) == pytest.approx(-1.0)
    # monotone but non-linear: Spearman 1, Pearson < 1
    assert spearman(a, a.exp()) == pytest.approx(1.0) and pearson(a, a.exp()) < 0.95
    # ties: ranks [1, 2.5, 2.5, 4] vs [1, 3, 2, 4] -> 4.5 / sqrt(4.5 * 5)
    assert spearman(torch.tensor([1.0, 2.0, 2.0, 3.0]), torch.tensor([1.0, 3.0, 2.0, 4.0])) == pytest.approx(
        4.5 / math.sqrt(22.5))
    with pytest.raises(ValueError, match="same length"):
        pearson(a, a[:3])
