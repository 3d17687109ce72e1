import pytest
import torch
import torch.nn.functional as F
from faircalib.kernels.packing import qrange

from faircalib.quant.quantizer import fake_quant, quantize_activation
from faircalib.quant.runtime import KroneckerOnline, QuantEmbedding, QuantLinear, quantize_rows


@pytest.mark.parametrize("bits", [3, 4, 8])
def test_quantize_rows_bounds_and_stored_scale(bits):
    g = torch.Generator().manual_seed(bits)
    w = torch.randn(12, 40, generator=g, dtype=torch.float64)
    clip = torch.linspace(0.6, 1.0, 12, dtype=torch.float64)
    codes, s = quantize_rows(w, bits, clip)
    lo, hi = qrange(bits)
    assert codes.dtype == torch.int8 and int(codes.min()) >= lo and int(codes.max()) <= hi
    assert s.dtype == torch.float32
    torch.testing.assert_close(s.double(), w.abs().amax(1) * clip / hi, rtol=1e-6, atol=0)
    # inside the clip range the error is at most half a step of the *stored* scale
    inside = w.abs() <= (s.double() * hi)[:, None]
    err = (codes.double() * s.double()[:, None] - w).abs()
    assert bool((err[inside] <= s.double()[:, None].expand_as(w)[inside] / 2 + 1e-12).all())


@pytest.mark.parametrize("w_bits, a_bits", [(4, 4), (3, 4), (8, 8), (4, 16)])
def test_quant_linear_matches_fake_quant_reference(w_bits, a_bits):
    g = torch.Generator().manual_seed(w_bits * 10 + a_bits)
    w, b = torch.randn(24, 64, generator=g), torch.randn(24, generator=g)
    x = torch.randn(2, 5, 64, generator=g) * 3
    ql = QuantLinear.from_float(w, b, w_bits, a_bits, act_clip=0.9)
    assert ql.qweight.dtype == (torch.uint8 if w_bits <= 4 else torch.int8)
    assert ql.qweight.shape == ((24, 32) if w_bits <= 4 else (24, 64))
    ref = F.linear(fake_quant(x, a_bits, 0.9), fake_quant(w, w_bits), b)
    y = ql(x)
    assert y.shape == (2, 5, 24)
    assert float((y - ref).abs().max()) < 1e-4 * float(ref.abs().max())


@pytest.mark.parametrize("k, w_bits, a_bits, bias, dtype", [(64, 4, 4, True, torch.bfloat16), (96, 3, 4, False, torch.float32),
                                                             (4096, 8, 8, True, torch.bfloat16)])
def test_quant_linear_epilogue_in_place_equals_the_out_of_place_formula_bitwise(k, w_bits, a_bits, bias, dtype):
    """The CPU forward's in-place codes / epilogue / bias give exactly the values of the written-out formula
    (codes -> integer GEMM -> acc * s_x * s_w + b), for float32 and float64 (K = 4096 at 8 bits) accumulators."""
    g = torch.Generator().manual_seed(k)
    w, b = torch.randn(40, k, generator=g), (torch.randn(40, generator=g) if bias else None)
    x = (torch.randn(3, 7, k, generator=g) * 3).to(dtype)
    ql = QuantLinear.from_float(w, b, w_bits, a_bits, act_clip=0.8)
    lo, hi = qrange(a_bits)
    xf = x.reshape(-1, k).float()
    s_x = (xf.abs().amax(-1, keepdim=True) * ql.act_clip).clamp(min=1e-8) / hi
    xq = torch.clamp(torch.round(xf / s_x), lo, hi)
    acc = xq.to(ql.acc_dtype) @ ql.codes().to(ql.acc_dtype).t()
    ref = (acc * s_x.to(ql.acc_dtype)).float() * ql.w_scale
    ref = (ref + b if bias else ref).to(dtype).reshape(3, 7, 40)
    with torch.no_grad():
        y = ql(x)
    assert y.dtype == dtype and torch.equal(y, ref)


def test_integer_gemm_is_exact():
    """The emulated GEMM equals an int64 matmul of the codes exactly, for int4 and int8 (float64 accumulators)."""
    g = torch.Generator().manual_seed(0)
    for w_bits, a_bits, k in [(4, 4, 4096), (8, 8, 2048)]:
        w = torch.randn(16, k, generator=g)
        ql = QuantLinear.from_float(w, None, w_bits, a_bits)
        x = torch.randn(7, k, generator=g)
        xq, _ = quantize_activation(x, a_bits)
        acc = ql._gemm(xq.float(), ql.codes())
        exact = xq.long() @ ql.codes().long().t()
        assert torch.equal(acc.long(), exact)
        assert ql.acc_dtype == (torch.float32 if (w_bits, k) == (4, 4096) else torch.float64)


def test_runtime_modules_keep_dtype_under_casts():
    ql = QuantLinear.from_float(torch.randn(8, 16), torch.randn(8), 4, 4)
    ko = KroneckerOnline.from_tensors(torch.rand(16) + 0.5, torch.randn(4, 4), torch.randn(4, 4))
    ql.to(torch.bfloat16)
    ko.to(torch.bfloat16)
    assert ql.w_scale.dtype == torch.float32 and ql.bias.dtype == torch.float32 and ql.qweight.dtype == torch.uint8
    assert ko.p1.dtype == torch.float32
    x = torch.randn(3, 16).to(torch.bfloat16)
    assert ql(x).dtype == torch.bfloat16 and ko(x).dtype == torch.bfloat16


def test_quant_embedding_lookup():
    w = torch.randn(10, 8, generator=torch.Generator().manual_seed(0))
    qe = QuantEmbedding.from_float(w, 4)
    ids = torch.tensor([[1, 3, 3, 9]])
    torch.testing.assert_close(qe(ids), fake_quant(w, 4)[ids])
    torch.testing.assert_close(qe.weight, fake_quant(w, 4))
