import copy

import pytest
import torch

from faircalib.models import tiny_model
from faircalib.quant.config import QuantConfig
from faircalib.quant.fake import ActPoint, install_fake_block
from faircalib.quant.fold import fold_block
from faircalib.quant.runtime import KroneckerOnline
from faircalib.quant.transforms import KroneckerTransform, balanced_factors, kron_apply, smooth_scale


@pytest.mark.parametrize("n, expect", [(64, (8, 8)), (96, (8, 12)), (704, (22, 32)), (4096, (64, 64)),
                                       (12288, (96, 128)), (18944, (128, 148)), (97, (1, 97))])
def test_balanced_factors(n, expect):
    assert balanced_factors(n) == expect


def test_kron_apply_equals_explicit_kron():
    g = torch.Generator().manual_seed(0)
    p1, p2 = torch.randn(6, 6, generator=g, dtype=torch.float64), torch.randn(8, 8, generator=g, dtype=torch.float64)
    x = torch.randn(3, 5, 48, generator=g, dtype=torch.float64)
    ref = x @ torch.kron(p1, p2)
    assert (kron_apply(x, p1, p2) - ref).abs().max() < 1e-12


def test_weight_transform_inverts_activation_transform():
    """x_t · W_tᵀ = x · Wᵀ for non-orthogonal P1, P2 and a non-trivial diagonal (float64)."""
    g = torch.Generator().manual_seed(1)
    t = KroneckerTransform(48, torch.rand(48, generator=g) + 0.5).double()
    with torch.no_grad():
        t.p1.add_(0.3 * torch.randn(6, 6, generator=g, dtype=torch.float64))
        t.p2.add_(0.3 * torch.randn(8, 8, generator=g, dtype=torch.float64))
    x = torch.randn(10, 48, generator=g, dtype=torch.float64)
    w = torch.randn(20, 48, generator=g, dtype=torch.float64)
    err = (t(x) @ t.transform_weight(w).T - x @ w.T).abs().max()
    assert err < 1e-10


def test_smooth_scale_formula():
    w = torch.tensor([4.0, 1.0, 0.0])
    x = torch.tensor([8.0, 1.0, 5.0])
    d = smooth_scale(w, x, alpha=0.3)
    assert d[0] == pytest.approx(4.0 ** 0.7 / 8.0 ** 0.3, rel=1e-6) and d[1] == pytest.approx(1.0)
    assert d[2] == 1.0  # dead weight channel -> identity


def _perturb_transforms(block, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for ap in block.act_transforms.values():
            t = ap.transform
            t.p1.add_(0.2 * torch.randn(t.p1.shape, generator=g))
            t.p2.add_(0.2 * torch.randn(t.p2.shape, generator=g))
            t.diag.mul_(torch.rand(t.diag.shape, generator=g) + 0.5)


@pytest.mark.parametrize("arch", ["llada", "dream"])
def test_transform_and_fold_preserve_fp_block_output(arch):
    """With quantization off (W16A16), the learnable transforms + inverse reproduce the FP block, and so
    does the float64 fold into KroneckerOnline + plain linears. Max abs error printed and bounded."""
    m = tiny_model(arch, seed=0)
    m.init_weights(0, std=0.15)  # large enough that the block's update is O(1), not hidden by the residual
    block = m.blocks[0]
    x = torch.randn(2, 12, 64, generator=torch.Generator().manual_seed(2))
    ctx = m.context(12)
    with torch.no_grad():
        ref = block(x, ctx)
    qcfg = QuantConfig(method="flatquant", w_bits=16, a_bits=16)
    fq = copy.deepcopy(block)
    install_fake_block(fq, qcfg, {p: torch.rand(96 if p == "down" else 64) + 0.1 for p in qcfg.points})
    _perturb_transforms(fq, 3)
    assert all(isinstance(fq.act_transforms[p], ActPoint) for p in qcfg.points)
    with torch.no_grad():
        err_fake = float((fq(x, ctx) - ref).abs().max())
        fold_block(fq, qcfg)
        assert all(isinstance(fq.act_transforms[p], KroneckerOnline) for p in qcfg.points)
        err_fold = float((fq(x, ctx) - ref).abs().max())
    print(f"\n{arch}: block update |ref - x|max={float((ref - x).abs().max()):.3f}, transform max abs "
          f"err={err_fake:.2e}, folded max abs err={err_fold:.2e}")
    assert err_fake < 3e-5 and err_fold < 3e-5  # float32 round-off on O(5) outputs
