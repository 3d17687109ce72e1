"""faircalib/bf16.py: the emulated bf16 GEMM is the bf16 computation (exact products, float32 sums, one
rounding), it acts only on bf16 CPU GEMMs, and bf16_autocast picks it where the CPU emulates bf16."""
from __future__ import annotations

import pytest
import torch

import faircalib.bf16 as bf16mod
from faircalib.bf16 import (
    KERNEL_EMULATED,
    KERNEL_NATIVE,
    Bf16GemmEmulation,
    bf16_autocast,
    bf16_kernel,
    fast_bf16,
)


def _ops(g: torch.Generator):
    a, b = torch.randn(64, 96, generator=g).bfloat16(), torch.randn(96, 40, generator=g).bfloat16()  # (M,K),(K,N)
    bias = torch.randn(40, generator=g).bfloat16()
    x, y = torch.randn(3, 64, 96, generator=g).bfloat16(), torch.randn(3, 96, 40, generator=g).bfloat16()
    c = torch.randn(3, 64, 40, generator=g).bfloat16()
    return {  # op name -> (call, the same computation in float32, rounded once)
        "mm": (lambda: a @ b, lambda: (a.float() @ b.float()).bfloat16()),
        "addmm": (lambda: torch.addmm(bias, a, b), lambda: torch.addmm(bias.float(), a.float(), b.float()).bfloat16()),
        "bmm": (lambda: torch.bmm(x, y), lambda: torch.bmm(x.float(), y.float()).bfloat16()),
        "baddbmm": (lambda: torch.baddbmm(c, x, y, alpha=0.5),
                    lambda: torch.baddbmm(c.float(), x.float(), y.float(), alpha=0.5).bfloat16()),
    }


@pytest.mark.parametrize("op", ["mm", "addmm", "bmm", "baddbmm"])
def test_each_gemm_is_float32_on_bf16_operands_rounded_once(op):
    call, reference = _ops(torch.Generator().manual_seed(0))[op]
    native = call()
    with Bf16GemmEmulation() as mode:
        emulated = call()
    assert mode.calls == 1 and emulated.dtype == torch.bfloat16
    assert torch.equal(emulated, reference())
    # the same numbers as torch's own bf16 kernel but for float32 summation order: a few outputs, by ~1 ulp
    rel = (emulated.float() - native.float()).abs() / native.float().abs().clamp_min(1e-2)
    assert float((emulated != native).float().mean()) < 0.02 and float(rel.max()) < 0.05


def test_other_dtypes_and_ops_run_unchanged():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(32, 16, generator=g), torch.randn(16, 8, generator=g)
    with Bf16GemmEmulation() as mode:
        f32 = a @ b  # float32 GEMM: not substituted
        mixed = torch.nn.functional.silu(a.bfloat16())  # not a GEMM
    assert mode.calls == 0
    assert torch.equal(f32, a @ b) and torch.equal(mixed, torch.nn.functional.silu(a.bfloat16()))


def test_bf16_autocast_emulates_a_linear_model_and_matches_native_autocast():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(48, 96), torch.nn.SiLU(), torch.nn.Linear(96, 32))  # float32 weights
    x = torch.randn(20, 48)
    with torch.no_grad():
        with bf16_autocast(emulate=False) as none:
            native = net(x)
        with bf16_autocast(emulate=True) as mode:
            emulated = net(x)
    assert none is None and mode.calls == 2  # both Linear layers went through the substitution
    assert native.dtype == emulated.dtype == torch.bfloat16
    torch.testing.assert_close(emulated.float(), native.float(), rtol=2 ** -6, atol=1e-3)


def test_auto_follows_the_cpu_measurement(monkeypatch):
    monkeypatch.setattr(bf16mod, "cpu_bf16_slowdown", lambda: 24.0)  # an AVX2-only CPU
    with bf16_autocast() as mode:
        assert isinstance(mode, Bf16GemmEmulation) and torch.is_autocast_cpu_enabled()
    monkeypatch.setattr(bf16mod, "cpu_bf16_slowdown", lambda: 0.6)  # a CPU with bf16 units
    with bf16_autocast() as mode:
        assert mode is None and torch.is_autocast_cpu_enabled()
    assert not torch.is_autocast_cpu_enabled()
    assert bf16_kernel(True) == KERNEL_EMULATED and bf16_kernel(False) == KERNEL_NATIVE


def _spy(monkeypatch) -> list:
    """Record every Bf16GemmEmulation that fast_bf16 hands out."""
    made = []

    class Spy(Bf16GemmEmulation):
        def __init__(self):
            super().__init__()
            made.append(self)

    monkeypatch.setattr(bf16mod, "Bf16GemmEmulation", Spy)
    return made


def test_fast_bf16_only_for_bf16_cpu_inference_where_the_cpu_emulates_bf16(monkeypatch):
    net = torch.nn.Linear(8, 4)
    monkeypatch.setattr(bf16mod, "cpu_bf16_slowdown", lambda: 24.0)
    with torch.no_grad():
        assert isinstance(fast_bf16(net.bfloat16()), Bf16GemmEmulation)
        assert not isinstance(fast_bf16(net.float()), Bf16GemmEmulation)  # float32 weights
        assert not isinstance(fast_bf16(object()), Bf16GemmEmulation)  # no parameters at all
    assert not isinstance(fast_bf16(net.bfloat16()), Bf16GemmEmulation)  # grad enabled: training runs native
    monkeypatch.setattr(bf16mod, "cpu_bf16_slowdown", lambda: 0.6)  # a CPU with bf16 units
    with torch.no_grad():
        assert not isinstance(fast_bf16(net.bfloat16()), Bf16GemmEmulation)


def test_decoding_a_bf16_model_uses_the_emulation_and_agrees_with_native(monkeypatch):
    from faircalib.diffusion import generate
    from faircalib.models.tiny import tiny_model

    model = tiny_model("llada", seed=0, n_layers=2).to(torch.bfloat16)
    prompts = [torch.randint(3, 90, (12,), generator=torch.Generator().manual_seed(i)) for i in range(4)]
    monkeypatch.setattr(bf16mod, "cpu_bf16_slowdown", lambda: 0.6)
    made = _spy(monkeypatch)
    native = generate(model, prompts, steps=8, gen_length=8, block_length=8)
    assert made == []
    monkeypatch.setattr(bf16mod, "cpu_bf16_slowdown", lambda: 24.0)
    emulated = generate(model, prompts, steps=8, gen_length=8, block_length=8)
    assert len(made) == 8 and all(m.calls > 0 for m in made)  # one per step, every GEMM substituted
    assert float((emulated.tokens == native.tokens).float().mean()) >= 0.9  # bf16 ulp-level differences only


def test_a_large_weight_is_upcast_a_column_block_at_a_time(monkeypatch):
    g = torch.Generator().manual_seed(2)
    a, w = torch.randn(6, 40, generator=g).bfloat16(), torch.randn(70, 40, generator=g).bfloat16()  # (M,K), (N,K)
    bias = torch.randn(70, generator=g).bfloat16()
    whole = {}
    with Bf16GemmEmulation():
        whole["mm"], whole["addmm"] = a @ w.T, torch.addmm(bias, a, w.T, beta=0.5, alpha=2.0)
    monkeypatch.setattr(bf16mod, "CHUNK_ELEMENTS", 40 * 16)  # 16 columns per block: 5 blocks, the last partial
    with Bf16GemmEmulation() as mode:
        chunked = {"mm": a @ w.T, "addmm": torch.addmm(bias, a, w.T, beta=0.5, alpha=2.0)}
    assert mode.calls == 2
    for op in ("mm", "addmm"):  # the same float32 dot products, rounded once
        assert chunked[op].dtype == torch.bfloat16 and chunked[op].shape == (6, 70)
        torch.testing.assert_close(chunked[op].float(), whole[op].float(), rtol=2 ** -7, atol=1e-6)
    ref = torch.addmm(bias.float(), a.float(), w.T.float(), beta=0.5, alpha=2.0).bfloat16()
    assert float((chunked["addmm"] != ref).float().mean()) < 0.02


def test_scoring_and_fidelity_logits_of_a_bf16_model_use_the_emulation(monkeypatch):
    from faircalib.eval.fidelity import masked_token_nll
    from faircalib.eval.loglik import masked_nll
    from faircalib.models.tiny import tiny_model

    model = tiny_model("llada", seed=0, n_layers=2).to(torch.bfloat16)
    pairs = [([5, 6, 7, 8], [9, 10]), ([11, 12], [13, 14, 15])]
    ids = torch.randint(3, 90, (2, 16), generator=torch.Generator().manual_seed(0))  # (B, T)
    monkeypatch.setattr(bf16mod, "cpu_bf16_slowdown", lambda: 0.6)
    made = _spy(monkeypatch)
    native = (masked_nll(model, pairs, mc_num=4), masked_token_nll(model, ids))
    assert made == []
    monkeypatch.setattr(bf16mod, "cpu_bf16_slowdown", lambda: 24.0)
    emulated = (masked_nll(model, pairs, mc_num=4), masked_token_nll(model, ids))
    assert len(made) >= 2 and all(m.calls > 0 for m in made)  # lm-eval scoring and the fidelity logits
    torch.testing.assert_close(torch.tensor(emulated[0]), torch.tensor(native[0]), rtol=0.02, atol=0.02)
    assert abs(emulated[1] - native[1]) < 0.02 * abs(native[1]) + 0.02


def test_stage2_calibration_of_a_bf16_model_runs_forward_and_backward_through_the_emulation(monkeypatch):
    from faircalib.calibrate import CalibConfig
    from faircalib.calibrate.engine import calibrate_layerwise
    from faircalib.models.tiny import tiny_model
    from faircalib.quant.config import QuantConfig

    ids = torch.randint(3, 90, (8, 32), generator=torch.Generator().manual_seed(0))  # (N, S)
    losses = {}
    for slowdown in (0.6, 24.0):  # a CPU with bf16 units, then one without
        monkeypatch.setattr(bf16mod, "cpu_bf16_slowdown", lambda s=slowdown: s)
        made = _spy(monkeypatch)
        model = tiny_model("llada", seed=0, n_layers=2).to(torch.bfloat16)
        res = calibrate_layerwise(model, ids, QuantConfig(method="flatquant"), CalibConfig(epochs=2, n=8, seq_len=32))
        losses[slowdown] = [b.final_loss for b in res.blocks]
        if slowdown == 0.6:
            assert made == []
    (mode,) = made
    # every block's forward and backward GEMMs: more calls than the forward passes alone make
    assert mode.calls > 2 * 2 * 7  # blocks x epochs x the 7 linears of a block
    for native, emulated in zip(losses[0.6], losses[24.0]):
        assert emulated == pytest.approx(native, rel=0.2)


def test_backward_gemms_go_through_the_emulation_too():
    torch.manual_seed(0)
    lin = torch.nn.Linear(16, 8).bfloat16()
    x = torch.randn(4, 16).bfloat16().requires_grad_()
    with Bf16GemmEmulation() as mode:
        lin(x).float().pow(2).sum().backward()
    assert mode.calls == 3  # forward addmm; backward: grad of the input and grad of the weight
    ref_x = x.detach().clone().requires_grad_()
    lin.weight.grad = None
    lin(ref_x).float().pow(2).sum().backward()  # torch's native bf16 kernels
    torch.testing.assert_close(x.grad.float(), ref_x.grad.float(), rtol=2 ** -6, atol=1e-3)
