import copy

import torch

from faircalib.models import tiny_model
from faircalib.quant.config import QuantConfig
from faircalib.quant.fake import (
    ActPoint,
    FakeQuantLinear,
    install_fake_block,
    learnable_parameters,
    restore_fp_block,
)
from faircalib.quant.fold import fold_block
from faircalib.quant.quantizer import fake_quant
from faircalib.quant.runtime import QuantLinear


def test_install_shares_one_transform_per_point_and_restore():
    m = tiny_model("dream")
    block = m.blocks[0]
    before = {r: block.role(r) for r in ("q", "k", "v", "o", "gate", "up", "down")}
    install_fake_block(block, QuantConfig(method="flatquant"))
    names = set(learnable_parameters(block))
    # one transform per point (q/k/v share, gate/up share), clipping per quantizer and per weight row
    assert {n for n in names if n.startswith("act_transforms")} == {
        f"act_transforms.{p}.{k}" for p in ("qkv", "o", "gate_up", "down")
        for k in ("clip_logit", "transform.p1", "transform.p2", "transform.diag")}
    assert block.role("q").weight_transform.__self__ is block.act_transforms["qkv"].transform
    assert block.role("k").weight_transform.__self__ is block.act_transforms["qkv"].transform
    assert tuple(block.role("gate").clip_logit.shape) == (96,)
    restore_fp_block(block)
    assert len(block.act_transforms) == 0
    assert all(block.role(r).weight is before[r].weight for r in before)


def test_gradients_reach_transforms_and_clips():
    m = tiny_model("llada")
    block = m.blocks[0]
    install_fake_block(block, QuantConfig(method="flatquant"))
    x = torch.randn(2, 8, 64, generator=torch.Generator().manual_seed(0))
    block(x, m.context(8)).pow(2).sum().backward()
    params = learnable_parameters(block)
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in params.values()), \
        [n for n, p in params.items() if p.grad is None or float(p.grad.abs().sum()) == 0]
    assert block.role("q").weight.grad is None  # FP weights stay frozen


def test_qdrop_drops_activation_quantization_only_in_training():
    ap = ActPoint(None, 4, clip_init=4.0, drop_prob=0.5)
    ap.generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 128, generator=torch.Generator().manual_seed(1))
    xq = fake_quant(x, 4, torch.sigmoid(torch.tensor(4.0)))
    ap.train()
    y = ap(x).detach()
    frac_fp = float((y == x).float().mean())
    assert 0.45 < frac_fp < 0.56  # about half the elements keep their FP value (a few also equal after quant)
    assert bool(((y == x) | (y == xq)).all())
    ap.eval()
    torch.testing.assert_close(ap(x), xq)


def test_fake_rtn_equals_runtime_rtn():
    """RTN in fake-quant form (ActPoint + FakeQuantLinear, clip 1) vs folded QuantLinear: same function."""
    m = tiny_model("dream", seed=1)
    m.init_weights(1, std=0.1)
    qcfg = QuantConfig(method="rtn")
    fake, run = copy.deepcopy(m), copy.deepcopy(m)
    for b in fake.blocks:
        install_fake_block(b, qcfg, rtn=True)
    assert isinstance(fake.blocks[0].role("q"), FakeQuantLinear) and not learnable_parameters(fake.blocks[0])
    for b in run.blocks:
        fold_block(b, qcfg)
    assert isinstance(run.blocks[0].role("q"), QuantLinear) and len(run.blocks[0].act_transforms) == 0
    ids = torch.randint(0, 95, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b, fp = fake(ids), run(ids), m(ids)
    assert float((a - b).abs().max()) < 1e-4
    assert float((a - fp).abs().max()) > 1e-2  # and quantization does change the output
