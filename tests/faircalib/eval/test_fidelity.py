import math

import torch
from torch import nn

from faircalib.eval import compare_to_reference, mask_batch, masked_token_nll
from faircalib.models import tiny_model


def test_mask_batch_counts_and_determinism():
    ids = torch.arange(40).view(4, 10)
    x, m = mask_batch(ids, 0.3, 99, seed=1)
    assert m.sum(1).tolist() == [3, 3, 3, 3]
    assert torch.equal(x[m], torch.full((12,), 99)) and torch.equal(x[~m], ids[~m])
    x2, m2 = mask_batch(ids, 0.3, 99, seed=1)
    assert torch.equal(m, m2) and not torch.equal(m, mask_batch(ids, 0.3, 99, seed=2)[1])


class _Uniform(nn.Module):
    mask_token_id = 7

    def __init__(self, V):
        super().__init__()
        self.V = V
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, ids):
        return torch.zeros(*ids.shape, self.V) + self.w


def test_uniform_model_has_log_v_nll_and_zero_kl_to_itself():
    ids = torch.randint(0, 7, (3, 12), generator=torch.Generator().manual_seed(0))
    m = _Uniform(11)
    assert abs(masked_token_nll(m, ids) - math.log(11)) < 1e-5
    r = compare_to_reference(m, ids, ref=m)
    assert abs(r.kl_to_ref) < 1e-7 and r.top1_agree == 1.0


def test_kl_positive_for_a_different_model():
    a, b = tiny_model("llada", seed=0), tiny_model("llada", seed=1)
    ids = torch.randint(0, 90, (2, 16), generator=torch.Generator().manual_seed(0))
    r = compare_to_reference(a, ids, ref=b)
    assert r.kl_to_ref > 1e-4 and 0 <= r.top1_agree < 1
    assert r.masked_tokens == 2 * sum(max(1, round(x * 16)) for x in (0.15, 0.3, 0.5, 0.7, 0.9))
