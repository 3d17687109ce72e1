"""W4A4 GEMM (Triton) vs the exact torch reference: the int32 accumulator must match exactly; the float
epilogue (acc * a_scale[m] * w_scale[n] + bias[n]) within float tolerance (in the interpreter it is
bit-identical; on GPU the compiler may fuse a multiply-add)."""
from __future__ import annotations

import pytest
import torch
from faircalib.kernels import gemm_triton, packing
from faircalib.kernels import reference as ref

from faircalib import kernels as fk


def _operands(gen, M, N, K):
    a = torch.randint(-8, 8, (M, K), generator=gen, dtype=torch.int8)
    w = torch.randint(-8, 8, (N, K), generator=gen, dtype=torch.int8)
    return a, w, packing.pack_int4(a), packing.pack_int4(w)


def _exact(a, w):
    return (a.long() @ w.long().t()).to(torch.int32)  # int64 matmul: the ground truth


@pytest.mark.parametrize("M,N,K", [(16, 32, 64), (37, 50, 200), (64, 128, 256), (1, 20, 30)])
def test_accumulator_is_exact(dev, gen, M, N, K):
    a, w, ap, wp = _operands(gen, M, N, K)
    acc = fk.w4a4_accumulate(ap.to(dev), wp.to(dev), backend="triton").cpu()
    assert acc.dtype == torch.int32 and acc.shape == (M, N)
    assert torch.equal(acc, _exact(a, w))
    assert torch.equal(ref.w4a4_accumulate(ap, wp), _exact(a, w))


@pytest.mark.parametrize("block", [(16, 32, 32), (32, 16, 64)])
def test_accumulator_exact_over_several_masked_k_steps(dev, gen, block):
    M, N, K = 45, 70, 200  # K/2 = 100: 4 or 2 K-steps with a masked tail; M, N not multiples of the tile
    a, w, ap, wp = _operands(gen, M, N, K)
    acc = gemm_triton.w4a4_gemm(ap.to(dev), wp.to(dev), None, None, None, torch.int32, interpreted=True,
                                block=block).cpu()
    assert torch.equal(acc, _exact(a, w))


def test_accumulator_extremes(dev):
    K = 256
    a = torch.full((16, K), -8, dtype=torch.int8)
    w = torch.cat([torch.full((8, K), -8, dtype=torch.int8), torch.full((8, K), 7, dtype=torch.int8)])
    acc = fk.w4a4_accumulate(packing.pack_int4(a).to(dev), packing.pack_int4(w).to(dev), backend="triton").cpu()
    assert (acc[:, :8] == 64 * K).all() and (acc[:, 8:] == -56 * K).all()


def test_strided_operands(dev, gen):
    a, w, ap, wp = _operands(gen, 20, 24, 128)
    wide = torch.zeros(24, 80, dtype=torch.uint8)
    wide[:, :64] = wp  # a row-strided view (stride 80 bytes)
    acc = fk.w4a4_accumulate(ap.to(dev), wide.to(dev)[:, :64], backend="triton").cpu()
    assert torch.equal(acc, _exact(a, w))


@pytest.mark.parametrize("out_dtype,rtol", [(torch.float32, 1e-6), (torch.bfloat16, 2 ** -8), (torch.float16, 2 ** -11)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_epilogue_matches_reference(dev, gen, out_dtype, rtol, with_bias):
    M, N, K = 37, 50, 192
    a, w, ap, wp = _operands(gen, M, N, K)
    sa = torch.rand(M, generator=gen) * 0.1 + 1e-3
    sw = torch.rand(N, generator=gen) * 0.05 + 1e-3
    bias = torch.randn(N, generator=gen) if with_bias else None
    got = fk.w4a4_matmul(ap.to(dev), sa.to(dev), wp.to(dev), sw.to(dev),
                         bias.to(dev) if with_bias else None, out_dtype, backend="triton").cpu()
    want = ref.w4a4_matmul(ap, sa, wp, sw, bias, out_dtype)
    assert got.dtype == out_dtype and got.shape == (M, N)
    torch.testing.assert_close(got.float(), want.float(), rtol=rtol, atol=1e-6)
    # the reference epilogue is the float64 dequantized product, rounded
    exact = (a.double() * sa.double()[:, None]) @ (w.double() * sw.double()[:, None]).t()
    if with_bias:
        exact += bias.double()
    torch.testing.assert_close(want.double(), exact.to(out_dtype).double(), rtol=2 * rtol, atol=1e-5)


def test_w4a4_linear_triton_equals_torch_path_and_tracks_fp(dev, gen):
    M, K, N = 24, 128, 40
    x = torch.randn(2, M // 2, K, generator=gen)
    w = torch.randn(N, K, generator=gen) / K ** 0.5
    codes = torch.clamp(torch.round(w / (w.abs().amax(1, keepdim=True) / 7)), -8, 7).to(torch.int8)
    wp, ws = packing.pack_int4(codes), w.abs().amax(1) / 7
    p1, p2 = torch.eye(8), torch.eye(16)
    y_t = fk.w4a4_linear(x.to(dev), wp.to(dev), ws.to(dev), None, None, p1.to(dev), p2.to(dev),
                         backend="triton").cpu()
    y_r = fk.w4a4_linear(x, wp, ws, None, None, p1, p2, backend="torch")
    assert y_t.shape == (2, M // 2, N)
    torch.testing.assert_close(y_t, y_r, rtol=1e-5, atol=1e-5)
    y_fp = x @ w.t()
    rel = (y_r - y_fp).norm() / y_fp.norm()
    assert 0.02 < rel < 0.3  # W4A4 of gaussian data: noticeably lossy, but tracks the FP output


def test_cuda_configs_are_legal_for_target_shapes():
    targets = [(4096, 4096), (4096, 12288), (12288, 4096), (3584, 3584), (3584, 512), (3584, 18944), (18944, 3584)]
    for c in gemm_triton.CUDA_CONFIGS:
        bm, bn, bkh = c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.kwargs["BLOCK_KH"]
        assert min(bm, bn) >= 16 and bkh >= 32  # int8 MMA minimum tile
        assert all((k // 2) % bkh == 0 for k, _ in targets)  # no masked K tail at the target shapes
    for K, N in targets:
        for M in (256, 1024, 4096):
            kept = gemm_triton._prune(gemm_triton.CUDA_CONFIGS, {"M": M, "N": N})
            def tiles(c, M=M, N=N):
                return -(-M // c.kwargs["BLOCK_M"]) * -(-N // c.kwargs["BLOCK_N"])
            assert kept
            assert all(tiles(c) >= min(132, max(map(tiles, gemm_triton.CUDA_CONFIGS))) // 2 for c in kept)
    kv = gemm_triton._prune(gemm_triton.CUDA_CONFIGS, {"M": 256, "N": 512})  # Dream k/v at small M
    assert kv and all(max(c.kwargs["BLOCK_N"], c.kwargs["BLOCK_M"]) <= 128 for c in kv)
    assert len(kv) < len(gemm_triton.CUDA_CONFIGS)
