"""Fused online transform + per-token int4 quantize + pack (Triton) vs the torch reference.

Without a Kronecker transform the kernel does the same float32 ops in the same order as the reference, so
codes and scales are compared bit-exactly. With a transform the two small matmuls sum in a different order
than torch's, so x' differs by float32 ulps; a code can then move by ±1 only where x'/s lies within ulps of
a .5 rounding boundary. Those tests allow at most 0.1% of codes to differ, by exactly 1, and compare scales
at rtol 1e-5; `test_transform_exact_when_float_math_is_exact` removes the ulp noise (dyadic inputs and ±1/4
Hadamard factors make every product and sum exact) and then demands bit-exact codes and scales.
"""
from __future__ import annotations

import pytest
import torch
from faircalib.kernels import packing
from faircalib.kernels import reference as ref

from faircalib import kernels as fk
from faircalib.quant import quantizer


def _codes(packed: torch.Tensor) -> torch.Tensor:
    return packing.unpack_int4(packed.cpu()).to(torch.int32)


def _rand(gen, shape, dtype=torch.float32, outliers=True):
    x = torch.randn(shape, generator=gen)
    if outliers:  # a few large channels, as in real LLM activations
        x[..., 3] *= 20.0
    return x.to(dtype)


def test_reference_kron_transform_equals_explicit_kronecker(gen):
    x = torch.randn(5, 24, generator=gen)
    p1, p2 = torch.randn(4, 4, generator=gen), torch.randn(6, 6, generator=gen)
    got = ref.kron_transform(x.double(), p1.double(), p2.double())
    torch.testing.assert_close(got, ref.kron_transform_explicit(x, p1, p2), rtol=1e-12, atol=1e-12)


def test_reference_matches_shared_quantizer_on_explicit_transform(gen):
    x = _rand(gen, (9, 48))
    d = torch.rand(48, generator=gen) + 0.5
    p1, p2 = torch.randn(6, 6, generator=gen), torch.randn(8, 8, generator=gen)
    packed, s = ref.quantize_activation_int4(x, d, p1, p2, clip=0.9)
    xt = ref.kron_transform_explicit(x * d, p1, p2).float()
    codes, s_q = quantizer.quantize_activation(xt, 4, clip=0.9)
    torch.testing.assert_close(s, s_q.squeeze(-1), rtol=1e-5, atol=0)
    diff = (_codes(packed) - codes.int()).abs()
    assert int(diff.max()) <= 1 and diff.float().mean() < 1e-3


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("with_diag", [False, True])
def test_no_transform_is_bit_exact(dev, gen, dtype, with_diag):
    M, K = 37, 200  # M not a multiple of the row block, K not a power of two
    x = _rand(gen, (M, K), dtype)
    d = (torch.rand(K, generator=gen) + 0.5) if with_diag else None
    packed, s = fk.quantize_activation_int4(x.to(dev), d.to(dev) if d is not None else None, clip=0.85,
                                            backend="triton")
    rp, rs = ref.quantize_activation_int4(x, d, clip=0.85)
    assert packed.dtype == torch.uint8 and packed.shape == (M, K // 2)
    assert s.dtype == torch.float32 and s.shape == (M,)
    assert torch.equal(packed.cpu(), rp)
    assert torch.equal(s.cpu(), rs)


@pytest.mark.parametrize("n1,n2", [(8, 8), (4, 16), (12, 16), (6, 10), (16, 4)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kron_transform_matches_reference(dev, gen, n1, n2, dtype):
    M, K = 45, n1 * n2
    x = _rand(gen, (M, K), dtype)
    d = torch.rand(K, generator=gen) + 0.5
    p1 = torch.eye(n1) + 0.3 * torch.randn(n1, n1, generator=gen)
    p2 = torch.eye(n2) + 0.3 * torch.randn(n2, n2, generator=gen)
    packed, s = fk.quantize_activation_int4(x.to(dev), d.to(dev), p1.to(dev), p2.to(dev), clip=0.9, backend="triton")
    rp, rs = ref.quantize_activation_int4(x, d, p1, p2, clip=0.9)
    torch.testing.assert_close(s.cpu(), rs, rtol=1e-5, atol=0)
    diff = (_codes(packed) - _codes(rp)).abs()
    assert int(diff.max()) <= 1
    assert int((diff > 0).sum()) <= max(1, diff.numel() // 1000)
    # and the codes really quantize (x·diag)(P1 ⊗ P2): dequantized error <= half a step (+ulps)
    xt = ref.kron_transform_explicit(x.float() * d, p1, p2).float()
    deq = _codes(packed).float() * s.cpu()[:, None]
    clipped = torch.minimum(xt.abs(), 7.5 * s.cpu()[:, None])  # values beyond the clip saturate
    assert ((deq.abs() - clipped).abs() <= 0.5 * s.cpu()[:, None] * (1 + 1e-4)).all()


def test_clip_as_device_tensor_equals_float_clip(dev, gen):
    x = _rand(gen, (20, 64), torch.bfloat16)
    a1, s1 = fk.quantize_activation_int4(x.to(dev), clip=torch.tensor(0.75).to(dev), backend="triton")
    a2, s2 = ref.quantize_activation_int4(x, clip=0.75)
    assert torch.equal(a1.cpu(), a2) and torch.equal(s1.cpu(), s2)
    with pytest.raises(ValueError, match="one-element"):
        fk.quantize_activation_int4(x, clip=torch.ones(2))


def test_transform_exact_when_float_math_is_exact(dev, gen):
    n1, n2 = 4, 16
    K = n1 * n2
    x = (torch.randint(-64, 65, (33, K), generator=gen).float() / 16).to(torch.bfloat16)  # dyadic, exact in bf16
    h2 = torch.tensor([[1.0, 1.0], [1.0, -1.0]])
    h4, h16 = torch.kron(h2, h2), torch.kron(torch.kron(h2, h2), torch.kron(h2, h2))
    p1, p2 = h4 / 4, h16 / 4
    packed, s = fk.quantize_activation_int4(x.to(dev), None, p1.to(dev), p2.to(dev), backend="triton")
    rp, rs = ref.quantize_activation_int4(x, None, p1, p2)
    assert torch.equal(packed.cpu(), rp) and torch.equal(s.cpu(), rs)


def test_one_factor_means_identity_for_the_other(dev, gen):
    x = _rand(gen, (16, 96))
    p2 = torch.randn(12, 12, generator=gen)
    packed, s = fk.quantize_activation_int4(x.to(dev), p2=p2.to(dev), backend="triton")
    rp, rs = ref.quantize_activation_int4(x, None, torch.eye(8), p2)
    torch.testing.assert_close(s.cpu(), rs, rtol=1e-5, atol=0)
    assert int((_codes(packed) - _codes(rp)).abs().max()) <= 1


def test_zero_rows_and_leading_dims(dev, gen):
    x = _rand(gen, (2, 5, 64))
    x[1, 2] = 0.0
    packed, s = fk.quantize_activation_int4(x.to(dev), backend="triton")
    assert packed.shape == (2, 5, 32) and s.shape == (2, 5)
    assert torch.equal(packed.cpu()[1, 2], torch.zeros(32, dtype=torch.uint8))
    assert float(s[1, 2]) == pytest.approx(1e-8 / 7)
    rp, rs = ref.quantize_activation_int4(x)
    assert torch.equal(packed.cpu(), rp) and torch.equal(s.cpu(), rs)


def test_triton_rejects_odd_p2(dev, gen):
    with pytest.raises(ValueError, match="even P2"):
        fk.quantize_activation_int4(torch.randn(4, 18).to(dev), None, torch.eye(6).to(dev), torch.eye(3).to(dev),
                                    backend="triton")
    with pytest.raises(ValueError, match="multiply"):
        fk.quantize_activation_int4(torch.randn(4, 20).to(dev), None, torch.eye(3).to(dev), torch.eye(4).to(dev),
                                    backend="triton")
