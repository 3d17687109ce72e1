"""Fused online activation quantization for a FlatQuant / FAIR-Calib linear, in one pass over x:

    x' = (x · diag)(P1 ⊗ P2)        # per token, as P1ᵀ X P2 on the row-major (n1, n2) view
    s  = max(max|x'| · clip, 1e-8) / 7
    q  = clamp(round_half_even(x' / s), -8, 7)  -> packed two nibbles per byte (low = even index)

Each program owns BLOCK_M tokens and keeps them in registers: it loads x once, does the two small
matmuls (fp32, IEEE precision), the row max, the rounding and the packing, and writes (M, K/2) uint8 +
(M,) float32 scales. The even and odd output columns are computed as separate tiles (P2's even / odd
columns), so packing needs no register shuffle. Requires n2 even (so byte pairs never straddle rows
of the (n1, n2) view); n1, n2 need not be powers of two (tiles are padded and masked).

Numerics match `reference.quantize_activation_int4`: same op order for the scale, IEEE division
(`div_rn`), round-half-even written with floor (the interpreter has no libdevice). Without a transform
the codes are bit-identical; with one the matmul summation order differs from torch's, so x' differs
by float32 ulps and a code can move by ±1 only when x'/s lies within ulps of a .5 boundary.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

_EPS = 1e-8
QMAX = 7.0


@triton.jit
def _round_half_even(y):
    f = tl.floor(y)
    d = y - f  # exact for |y| < 2^23
    odd = (f - 2.0 * tl.floor(f * 0.5)) == 1.0
    up = (d > 0.5) | ((d == 0.5) & odd)
    return tl.where(up, f + 1.0, f)


@triton.jit
def _quantize_int4_kernel(x_ptr, diag_ptr, p1_ptr, p2_ptr, out_ptr, scale_ptr, M, n1, n2, stride_xm, clip,
                          clip_ptr, CLIP_FROM_PTR: tl.constexpr, HAS_DIAG: tl.constexpr, HAS_TRANSFORM: tl.constexpr, BLOCK_M: tl.constexpr,
                          BLOCK_N1: tl.constexpr, BLOCK_H: tl.constexpr):
    BLOCK_N2: tl.constexpr = 2 * BLOCK_H
    rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)  # token rows
    ri = tl.arange(0, BLOCK_N1)  # row of the (n1, n2) view
    rh = tl.arange(0, BLOCK_H)  # byte (column pair) within a view row
    half = n2 // 2
    m3 = rm[:, None, None]
    i3 = ri[None, :, None]
    h3 = rh[None, None, :]
    mask_out = (m3 < M) & (i3 < n1) & (h3 < half)  # (BM, BN1, BH)
    if HAS_TRANSFORM:
        rj = tl.arange(0, BLOCK_N2)
        j3 = rj[None, None, :]
        mask_x = (m3 < M) & (i3 < n1) & (j3 < n2)
        x = tl.load(x_ptr + m3 * stride_xm + i3 * n2 + j3, mask=mask_x, other=0.0).to(tl.float32)  # (BM, BN1, BN2)
        if HAS_DIAG:
            d = tl.load(diag_ptr + ri[:, None] * n2 + rj[None, :], mask=(ri[:, None] < n1) & (rj[None, :] < n2),
                        other=0.0).to(tl.float32)  # (BN1, BN2)
            x = x * d[None, :, :]
        # P2 split into its even / odd columns: (BN2, BH) each
        rb = tl.arange(0, BLOCK_N2)
        mask_p2 = (rb[:, None] < n2) & (rh[None, :] < half)
        p2e = tl.load(p2_ptr + rb[:, None] * n2 + 2 * rh[None, :], mask=mask_p2, other=0.0).to(tl.float32)
        p2o = tl.load(p2_ptr + rb[:, None] * n2 + 2 * rh[None, :] + 1, mask=mask_p2, other=0.0).to(tl.float32)
        ra = tl.arange(0, BLOCK_N1)
        p1 = tl.load(p1_ptr + ra[:, None] * n1 + ri[None, :], mask=(ra[:, None] < n1) & (ri[None, :] < n1),
                     other=0.0).to(tl.float32)  # (BN1, BN1), p1[a, i]
        x2 = tl.reshape(x, (BLOCK_M * BLOCK_N1, BLOCK_N2))
        ye = tl.dot(x2, p2e, input_precision="ieee")  # (BM*BN1, BH) = X P2[:, even]
        yo = tl.dot(x2, p2o, input_precision="ieee")
        # contract over the n1 axis: Z[m, i, h] = sum_a P1[a, i] Y[m, a, h]
        ye = tl.reshape(tl.permute(tl.reshape(ye, (BLOCK_M, BLOCK_N1, BLOCK_H)), (0, 2, 1)),
                        (BLOCK_M * BLOCK_H, BLOCK_N1))  # (BM*BH, BN1)
        yo = tl.reshape(tl.permute(tl.reshape(yo, (BLOCK_M, BLOCK_N1, BLOCK_H)), (0, 2, 1)),
                        (BLOCK_M * BLOCK_H, BLOCK_N1))
        ze = tl.dot(ye, p1, input_precision="ieee")  # (BM*BH, BN1)
        zo = tl.dot(yo, p1, input_precision="ieee")
        ze = tl.permute(tl.reshape(ze, (BLOCK_M, BLOCK_H, BLOCK_N1)), (0, 2, 1))  # (BM, BN1, BH)
        zo = tl.permute(tl.reshape(zo, (BLOCK_M, BLOCK_H, BLOCK_N1)), (0, 2, 1))
    else:
        base = x_ptr + m3 * stride_xm + i3 * n2 + 2 * h3
        ze = tl.load(base, mask=mask_out, other=0.0).to(tl.float32)  # (BM, BN1, BH) even columns
        zo = tl.load(base + 1, mask=mask_out, other=0.0).to(tl.float32)  # odd columns
        if HAS_DIAG:
            dmask = (ri[:, None] < n1) & (rh[None, :] < half)
            dbase = diag_ptr + ri[:, None] * n2 + 2 * rh[None, :]
            ze = ze * tl.load(dbase, mask=dmask, other=0.0).to(tl.float32)[None, :, :]
            zo = zo * tl.load(dbase + 1, mask=dmask, other=0.0).to(tl.float32)[None, :, :]
    ze = tl.where(mask_out, ze, 0.0)
    zo = tl.where(mask_out, zo, 0.0)
    if CLIP_FROM_PTR:  # a learned clip stored as a device tensor (no host sync to read it)
        clip = tl.load(clip_ptr).to(tl.float32)
    amax = tl.maximum(tl.max(tl.max(tl.abs(ze), axis=2), axis=1), tl.max(tl.max(tl.abs(zo), axis=2), axis=1))
    s = tl.math.div_rn(tl.maximum(amax * clip, 1e-8), 7.0)  # (BM,)
    s3 = s[:, None, None]
    qe = _round_half_even(tl.minimum(tl.maximum(tl.math.div_rn(ze, s3), -9.0), 8.0))
    qo = _round_half_even(tl.minimum(tl.maximum(tl.math.div_rn(zo, s3), -9.0), 8.0))
    qe = tl.minimum(tl.maximum(qe, -8.0), 7.0).to(tl.int32)
    qo = tl.minimum(tl.maximum(qo, -8.0), 7.0).to(tl.int32)
    byte = (qe & 0xF) | ((qo & 0xF) << 4)
    tl.store(out_ptr + m3 * (n1 * half) + i3 * half + h3, byte.to(tl.uint8), mask=mask_out)
    tl.store(scale_ptr + rm, s, mask=rm < M)


def _pow2(n: int, lo: int = 1) -> int:
    return max(lo, triton.next_power_of_2(n))


def quantize_activation_int4(x: torch.Tensor, diag: torch.Tensor | None, p1: torch.Tensor | None,
                             p2: torch.Tensor | None, clip: float | torch.Tensor, interpreted: bool) -> tuple[torch.Tensor,
                                                                                              torch.Tensor]:
    """x (..., K) -> (packed (..., K/2) uint8, scales (...) float32). p1, p2 both given or both None;
    `clip` a float or a one-element tensor on x's device."""
    K = x.shape[-1]
    lead = x.shape[:-1]
    x2 = x.reshape(-1, K)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    M = x2.shape[0]
    has_t = p1 is not None
    n1, n2 = (p1.shape[0], p2.shape[0]) if has_t else (1, K)
    if n1 * n2 != K:
        raise ValueError(f"Kronecker factors {n1} x {n2} do not multiply to K={K}")
    if n2 % 2:
        raise ValueError(f"the Triton quantize kernel needs an even P2 size (byte pairs within a row), got n2={n2}")
    out = torch.empty(M, K // 2, dtype=torch.uint8, device=x.device)
    scales = torch.empty(M, dtype=torch.float32, device=x.device)
    if M == 0:
        return out.reshape(*lead, K // 2), scales.reshape(lead)
    min_dot = 16  # tl.dot needs every dim >= 16
    bn1 = _pow2(n1, min_dot if has_t else 1)
    bh = _pow2(n2 // 2, min_dot if has_t else 1)
    row_elems = bn1 * 2 * bh
    budget = 16384 if interpreted else 8192  # elements of x held by one program
    bm = max(1, min(16, budget // row_elems, _pow2(M)))
    bm = 1 << (bm.bit_length() - 1)
    dummy = x2
    p1c = p1.float().contiguous() if has_t else dummy
    p2c = p2.float().contiguous() if has_t else dummy
    dg = diag.contiguous() if diag is not None else dummy
    num_warps = 4 if row_elems * bm <= 4096 else 8
    clip_t = clip.reshape(1).float() if isinstance(clip, torch.Tensor) else None
    _quantize_int4_kernel[(triton.cdiv(M, bm),)](
        x2, dg, p1c, p2c, out, scales, M, n1, n2, x2.stride(0), 1.0 if clip_t is not None else float(clip),
        clip_t if clip_t is not None else dummy, CLIP_FROM_PTR=clip_t is not None, HAS_DIAG=diag is not None, HAS_TRANSFORM=has_t, BLOCK_M=bm, BLOCK_N1=bn1, BLOCK_H=bh,
        num_warps=num_warps)
    return out.reshape(*lead, K // 2), scales.reshape(lead)
