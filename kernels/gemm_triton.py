"""W4A4 GEMM in Triton: packed int4 activations (M, K/2) x packed int4 weights (N, K/2) -> (M, N).

Per K step each program loads a (BLOCK_M, BLOCK_KH) byte tile of A and a (BLOCK_KH, BLOCK_N) byte tile of
Wᵀ, sign-extends the nibbles to int8 in registers and issues two int8 `tl.dot`s with int32
accumulation: one over the even K indices (low nibbles of both operands), one over the odd K indices
(high nibbles). Both operands use the same packing, so sum_k a_k w_k = sum_even + sum_odd and no
interleaving shuffle is needed (Hopper has int8 but no int4 tensor-core MMA). Epilogue: acc(fp32) *
a_scale[m] * w_scale[n] (+ bias[n]) cast to the output dtype, or the raw int32 accumulator (RAW_ACC,
used by the tests to check the integer part exactly). M, N and K need not be multiples of the blocks.

On CUDA the block sizes are autotuned (key: M bucket, N, K/2) over configs chosen for the LLaDA-8B and
Dream-7B layer shapes; under TRITON_INTERPRET=1 one fixed config is used (autotuning would only time
the interpreter). Reference: `kernels/reference.py::w4a4_matmul`.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _to_bf16_rne(x):
    """float32 -> bfloat16, round to nearest even, written with integer ops (the interpreter truncates on
    `.to(tl.bfloat16)`; on GPU this is what cvt.rn.bf16.f32 computes). Finite inputs."""
    bits = x.to(tl.uint32, bitcast=True)
    bits = bits + (((bits >> 16) & 1) + 0x7FFF)
    return (bits >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)


@triton.jit
def _w4a4_gemm_kernel(a_ptr, w_ptr, c_ptr, sa_ptr, sw_ptr, bias_ptr, M, N, KH, stride_am, stride_wn, stride_cm,
                      M_BUCKET, HAS_BIAS: tl.constexpr, RAW_ACC: tl.constexpr, OUT_BF16: tl.constexpr, BLOCK_M: tl.constexpr,
                      BLOCK_N: tl.constexpr, BLOCK_KH: tl.constexpr, GROUP_M: tl.constexpr):
    # M_BUCKET only feeds the autotune key (M rounded up to a power of two)
    pid = tl.program_id(0)
    num_m = tl.cdiv(M, BLOCK_M)
    num_n = tl.cdiv(N, BLOCK_N)
    # grouped ordering: GROUP_M row-blocks share each weight column-block while it is in L2
    group = pid // (GROUP_M * num_n)
    first_m = group * GROUP_M
    group_size = tl.minimum(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % (GROUP_M * num_n)) % group_size
    pid_n = (pid % (GROUP_M * num_n)) // group_size

    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_KH)  # byte index along K/2
    ram = rm % M  # wrap out-of-range rows/cols onto valid ones (results masked at the store)
    rwn = rn % N
    a_ptrs = a_ptr + ram[:, None] * stride_am + rk[None, :]  # (BM, BKH)
    w_ptrs = w_ptr + rwn[None, :] * stride_wn + rk[:, None]  # (BKH, BN), i.e. Wᵀ
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
    for kk in range(tl.cdiv(KH, BLOCK_KH)):
        k_left = KH - kk * BLOCK_KH
        a = tl.load(a_ptrs, mask=rk[None, :] < k_left, other=0).to(tl.int32)  # bytes 0..255; pad byte 0 = codes (0, 0)
        w = tl.load(w_ptrs, mask=rk[:, None] < k_left, other=0).to(tl.int32)
        a_lo = (((a & 0xF) ^ 8) - 8).to(tl.int8)  # even K indices
        a_hi = ((((a >> 4) & 0xF) ^ 8) - 8).to(tl.int8)  # odd K indices
        w_lo = (((w & 0xF) ^ 8) - 8).to(tl.int8)
        w_hi = ((((w >> 4) & 0xF) ^ 8) - 8).to(tl.int8)
        acc = tl.dot(a_lo, w_lo, acc, out_dtype=tl.int32)
        acc = tl.dot(a_hi, w_hi, acc, out_dtype=tl.int32)
        a_ptrs += BLOCK_KH
        w_ptrs += BLOCK_KH

    c_mask = (rm[:, None] < M) & (rn[None, :] < N)
    c_ptrs = c_ptr + rm[:, None] * stride_cm + rn[None, :]
    if RAW_ACC:
        tl.store(c_ptrs, acc, mask=c_mask)
    else:
        sa = tl.load(sa_ptr + ram).to(tl.float32)  # (BM,) per-token scales
        sw = tl.load(sw_ptr + rwn).to(tl.float32)  # (BN,) per-channel scales
        out = acc.to(tl.float32) * sa[:, None] * sw[None, :]
        if HAS_BIAS:
            out = out + tl.load(bias_ptr + rwn).to(tl.float32)[None, :]
        if OUT_BF16:
            tl.store(c_ptrs, _to_bf16_rne(out), mask=c_mask)
        else:
            tl.store(c_ptrs, out.to(c_ptr.dtype.element_ty), mask=c_mask)


def _cfg(bm: int, bn: int, bkh: int, warps: int, stages: int) -> triton.Config:
    return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_KH": bkh, "GROUP_M": 8}, num_warps=warps,
                         num_stages=stages)


# Candidates for the LLaDA-8B (K, N) in {(4096, 4096), (4096, 12288), (12288, 4096)} and Dream-7B
# {(3584, 3584), (3584, 512), (3584, 18944), (18944, 3584)} shapes at M in 256..8192. BLOCK_KH is in bytes
# (= BLOCK_K / 2); every K/2 above is a multiple of 64. Wide tiles for large M, narrow for small M / N=512.
CUDA_CONFIGS = [
    _cfg(128, 256, 64, 8, 3), _cfg(256, 128, 64, 8, 3), _cfg(128, 128, 64, 4, 4), _cfg(128, 128, 128, 8, 3),
    _cfg(128, 64, 128, 4, 4), _cfg(64, 128, 128, 4, 4), _cfg(64, 64, 128, 4, 5), _cfg(64, 256, 64, 8, 4),
]


def _num_sms(named_args) -> int:
    a = named_args.get("a_ptr")
    if isinstance(a, torch.Tensor) and a.is_cuda:
        return torch.cuda.get_device_properties(a.device).multi_processor_count
    return 132  # H100 SXM


def _prune(configs, named_args, **_):
    """Keep tiles that fit the problem and leave enough programs to fill the GPU: BLOCK_M no larger than
    M's power of two (min 64), and at least half as many output tiles as SMs (or the most any config
    gives), e.g. drops 128x256 tiles for Dream's N=512 k/v projections."""
    M, N = named_args["M"], named_args["N"]

    def tiles(c):
        return triton.cdiv(M, c.kwargs["BLOCK_M"]) * triton.cdiv(N, c.kwargs["BLOCK_N"])

    fit = [c for c in configs if c.kwargs["BLOCK_M"] <= max(64, triton.next_power_of_2(M))] or configs
    need = min(_num_sms(named_args), max(tiles(c) for c in fit)) // 2
    return [c for c in fit if tiles(c) >= need]


_autotuned = None


def _autotuned_kernel():
    global _autotuned
    if _autotuned is None:
        _autotuned = triton.autotune(configs=CUDA_CONFIGS, key=["M_BUCKET", "N", "KH"],
                                     prune_configs_by={"early_config_prune": _prune})(_w4a4_gemm_kernel)
    return _autotuned


def interpreter_block(M: int, N: int, KH: int) -> tuple[int, int, int]:
    """The fixed (BLOCK_M, BLOCK_N, BLOCK_KH) used under TRITON_INTERPRET=1: few, large programs."""
    p2 = triton.next_power_of_2
    return min(64, max(16, p2(M))), min(128, max(16, p2(N))), min(128, max(32, p2(KH)))


def w4a4_gemm(a_packed: torch.Tensor, w_packed: torch.Tensor, a_scale: torch.Tensor | None,
              w_scale: torch.Tensor | None, bias: torch.Tensor | None, out_dtype: torch.dtype, interpreted: bool,
              block: tuple[int, int, int] | None = None) -> torch.Tensor:
    """(M, K/2) x (N, K/2) uint8 -> (M, N) out_dtype; out_dtype=torch.int32 returns the raw accumulator.
    `block` forces (BLOCK_M, BLOCK_N, BLOCK_KH) (tests); otherwise autotune on CUDA, fixed when interpreted."""
    M, KH = a_packed.shape
    N, KH_w = w_packed.shape
    if KH != KH_w:
        raise ValueError(f"packed K mismatch: activations have K/2={KH}, weights K/2={KH_w}")
    a_packed = a_packed if a_packed.stride(-1) == 1 else a_packed.contiguous()
    w_packed = w_packed if w_packed.stride(-1) == 1 else w_packed.contiguous()
    raw = out_dtype == torch.int32
    out = torch.empty(M, N, dtype=out_dtype, device=a_packed.device)
    if M == 0 or N == 0:
        return out
    if KH == 0:
        return out.zero_()
    dummy = out
    sa = a_scale.contiguous() if not raw else dummy
    sw = w_scale.contiguous() if not raw else dummy
    b = bias.contiguous() if bias is not None else dummy
    args = (a_packed, w_packed, out, sa, sw, b, M, N, KH, a_packed.stride(0), w_packed.stride(0), out.stride(0),
            min(triton.next_power_of_2(M), 8192))
    flags = {"HAS_BIAS": bias is not None and not raw, "RAW_ACC": raw, "OUT_BF16": out_dtype == torch.bfloat16}
    if block is None and not interpreted:
        kernel = _autotuned_kernel()

        def grid(meta):
            return (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)

        kernel[grid](*args, **flags)
        return out
    bm, bn, bkh = block or interpreter_block(M, N, KH)
    grid = (triton.cdiv(M, bm) * triton.cdiv(N, bn),)
    _w4a4_gemm_kernel[grid](*args, **flags, BLOCK_M=bm, BLOCK_N=bn, BLOCK_KH=bkh, GROUP_M=8,
                            num_warps=4 if bm * bn <= 8192 else 8)
    return out
