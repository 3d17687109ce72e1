"""Plain-torch references for every kernel in `faircalib.kernels` (run on any device, used on CPU and
as the ground truth the Triton kernels are tested against).

Boundary: numerics only. The int4 layout is `faircalib.kernels.packing` and the per-token quantizer
`faircalib.kernels.quantizer` (imported, never redefined), so the kernels, the checkpoint format and the
calibration code all share one definition of "the" int4 activation codes.

Kronecker transform on a row-major reshaped token (FlatQuant): for x (K,) with K = n1 * n2,

    (x (P1 ⊗ P2))[i * n2 + j] = sum_{a,b} x[a * n2 + b] P1[a, i] P2[b, j] = (P1ᵀ X P2)[i, j],  X = x.view(n1, n2)

so the (K, K) matrix is never formed; `kron_transform_explicit` forms it (float64) to check this.
"""
from __future__ import annotations

import torch
from faircalib.kernels.packing import pack_int4 as _pack_int4
from faircalib.kernels.packing import unpack_int4 as _unpack_int4
from faircalib.kernels.quantizer import quantize_codes, symmetric_scale

BITS = 4


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """(..., K) int codes in [-8, 7] -> (..., K/2) uint8 (faircalib.kernels.packing layout)."""
    return _pack_int4(q)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """(..., K/2) uint8 -> (..., K) int8."""
    return _unpack_int4(packed)


def kron_transform(x: torch.Tensor, p1: torch.Tensor, p2: torch.Tensor) -> torch.Tensor:
    """x (..., K) float32, p1 (n1, n1), p2 (n2, n2), n1 * n2 = K -> x (P1 ⊗ P2) as two small matmuls."""
    n1, n2 = p1.shape[0], p2.shape[0]
    lead = x.shape[:-1]
    X = x.reshape(-1, n1, n2)  # (M, n1, n2), row-major view of each token
    Y = torch.matmul(torch.matmul(p1.t(), X), p2)  # (M, n1, n2) = P1ᵀ X P2
    return Y.reshape(*lead, n1 * n2)


def kron_transform_explicit(x: torch.Tensor, p1: torch.Tensor, p2: torch.Tensor) -> torch.Tensor:
    """Same as `kron_transform` with the (K, K) Kronecker matrix formed in float64 (tests only)."""
    return x.double() @ torch.kron(p1.double(), p2.double())


def online_transform(x: torch.Tensor, diag: torch.Tensor | None = None, p1: torch.Tensor | None = None,
                     p2: torch.Tensor | None = None) -> torch.Tensor:
    """The float part of the fused kernel: (x · diag)(P1 ⊗ P2) in float32. x: (..., K) -> (..., K)."""
    xf = x.float()
    if diag is not None:
        xf = xf * diag.float()
    if p1 is not None or p2 is not None:
        p1f, p2f = _complete_pair(p1, p2, x.shape[-1], xf.device)
        xf = kron_transform(xf, p1f, p2f)
    return xf


def quantize_activation_int4(x: torch.Tensor, diag: torch.Tensor | None = None, p1: torch.Tensor | None = None,
                             p2: torch.Tensor | None = None, clip: float | torch.Tensor = 1.0):
    """x (..., K) -> (packed (..., K/2) uint8, scales (...) float32): transform, per-token int4 quantize, pack."""
    xt = online_transform(x, diag, p1, p2)  # (..., K) float32
    if isinstance(clip, torch.Tensor):
        clip = clip.float().reshape(())  # one learned factor
    s = symmetric_scale(xt, BITS, clip)  # (..., 1)
    codes = quantize_codes(xt, s, BITS).to(torch.int8)  # (..., K)
    return pack_int4(codes), s.squeeze(-1)


def w4a4_accumulate(a_packed: torch.Tensor, w_packed: torch.Tensor) -> torch.Tensor:
    """Exact integer GEMM of the codes: (M, K/2) x (N, K/2) uint8 -> (M, N) int32 = A_codes @ W_codesᵀ.

    float64 holds every partial sum exactly (|sum| <= K * 64 << 2^53), so this is exact integer math."""
    a = unpack_int4(a_packed).double()  # (M, K)
    w = unpack_int4(w_packed).double()  # (N, K)
    return (a @ w.t()).to(torch.int32)  # (M, N)


def w4a4_matmul(a_packed: torch.Tensor, a_scale: torch.Tensor, w_packed: torch.Tensor, w_scale: torch.Tensor,
                bias: torch.Tensor | None = None, out_dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """(M, K/2) packed activations with per-token scales (M,) x (N, K/2) packed weights with per-channel
    scales (N,) -> (M, N) out_dtype: acc(int32) -> float32 * a_scale[m] * w_scale[n] (+ bias[n])."""
    acc = w4a4_accumulate(a_packed, w_packed).float()  # (M, N)
    out = acc * a_scale.float()[:, None] * w_scale.float()[None, :]
    if bias is not None:
        out = out + bias.float()[None, :]
    return out.to(out_dtype)


def _complete_pair(p1: torch.Tensor | None, p2: torch.Tensor | None, k: int, device) -> tuple[torch.Tensor,
                                                                                         torch.Tensor]:
    """Float32 (P1, P2); a missing factor is the identity of the complementary size."""
    if p1 is None and p2 is None:
        raise ValueError("need at least one Kronecker factor")
    if p1 is None:
        p1 = torch.eye(k // p2.shape[0], device=device)
    if p2 is None:
        p2 = torch.eye(k // p1.shape[0], device=device)
    if p1.shape[0] * p2.shape[0] != k:
        raise ValueError(f"Kronecker factors {tuple(p1.shape)} x {tuple(p2.shape)} do not multiply to K={k}")
    return p1.float(), p2.float()
