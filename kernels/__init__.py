"""faircalib.kernels — W4A4 inference kernels (Triton) with plain-torch references.

Public API (each takes `backend="auto" | "triton" | "torch"`):

- `pack_int4(q)` / `unpack_int4(packed)`: the `faircalib.kernels.packing` int4 layout.
- `quantize_activation_int4(x, diag=None, p1=None, p2=None, clip=1.0)`: fused (x·diag)(P1 ⊗ P2) +
  per-token symmetric int4 quantization + packing -> (packed (..., K/2) uint8, scales (...) float32).
- `w4a4_matmul(a_packed, a_scale, w_packed, w_scale, bias=None, out_dtype=torch.bfloat16)`: int4 x int4
  GEMM with int32 accumulation and a per-token x per-channel scale epilogue -> (M, N) out_dtype.
- `w4a4_accumulate(a_packed, w_packed)`: the raw int32 accumulator (M, N) (tests, debugging).
- `w4a4_linear(x, w_packed, w_scale, bias=None, diag=None, p1=None, p2=None, clip=1.0)`: the two steps
  together for x (..., K) -> (..., N) in x's dtype (what a quantized runtime linear calls).

Dispatch: "auto" runs Triton on CUDA tensors and the torch reference (`kernels/reference.py`) otherwise;
"triton" forces the kernels (CUDA tensors, or CPU tensors when TRITON_INTERPRET=1 was set before triton
was imported — the tests do this); "torch" forces the reference. Importing this package never imports
triton, so it works on machines without a GPU (or without triton).
"""
from __future__ import annotations

import importlib.util
import os

import torch
from faircalib.kernels import reference

BACKENDS = ("auto", "triton", "torch")

__all__ = [
    "BACKENDS",
    "interpreter_enabled",
    "pack_int4",
    "quantize_activation_int4",
    "reference",
    "triton_available",
    "unpack_int4",
    "w4a4_accumulate",
    "w4a4_linear",
    "w4a4_matmul",
]


def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def interpreter_enabled() -> bool:
    """TRITON_INTERPRET=1 (must be set before triton is first imported to take effect)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def _use_triton(backend: str, t: torch.Tensor) -> bool:
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r}; use one of {', '.join(BACKENDS)}")
    if backend == "torch":
        return False
    if backend == "auto":
        return t.is_cuda and triton_available()
    if not triton_available():
        raise RuntimeError("backend='triton' but triton is not installed; pip install triton or use backend='torch'")
    if not t.is_cuda and not interpreter_enabled():
        raise RuntimeError("backend='triton' on CPU tensors needs TRITON_INTERPRET=1 set before triton is imported; "
                           "move the tensors to CUDA or use backend='torch'")
    return True


def _interpreted(t: torch.Tensor) -> bool:
    return interpreter_enabled() or not t.is_cuda


def _check_codes(q: torch.Tensor) -> None:
    if q.is_floating_point() or q.is_complex():
        raise ValueError(f"pack_int4 needs integer codes, got {q.dtype}")
    if q.shape[-1] % 2:
        raise ValueError(f"pack_int4 needs an even last dimension, got {q.shape[-1]}")
    if q.numel():
        lo, hi = torch.aminmax(q)
        if int(lo) < -8 or int(hi) > 7:
            raise ValueError("pack_int4: values outside [-8, 7]")


def pack_int4(q: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """(..., K) integer codes in [-8, 7] -> (..., K/2) uint8."""
    if not _use_triton(backend, q):
        return reference.pack_int4(q)
    _check_codes(q)
    from faircalib.kernels import pack_triton
    return pack_triton.pack_int4(q)


def unpack_int4(packed: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """(..., K/2) uint8 -> (..., K) int8."""
    if packed.dtype != torch.uint8:
        raise ValueError(f"unpack_int4 needs uint8 bytes, got {packed.dtype}")
    if not _use_triton(backend, packed):
        return reference.unpack_int4(packed)
    from faircalib.kernels import pack_triton
    return pack_triton.unpack_int4(packed)


def quantize_activation_int4(x: torch.Tensor, diag: torch.Tensor | None = None, p1: torch.Tensor | None = None,
                             p2: torch.Tensor | None = None, clip: float | torch.Tensor = 1.0,
                             backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """x (..., K) float -> (packed (..., K/2) uint8, per-token scales (...) float32) of (x·diag)(P1 ⊗ P2).

    A missing Kronecker factor is the identity; `clip` (0 < clip <= 1 typically) scales max|x'| before
    the scale is taken, as in `faircalib.quant.quantizer.symmetric_scale`; it may be a one-element tensor
    (a learned clip buffer), read on the device without a host sync."""
    K = x.shape[-1]
    if not x.is_floating_point():
        raise ValueError(f"quantize_activation_int4 needs a float input, got {x.dtype}")
    if K % 2:
        raise ValueError(f"quantize_activation_int4 needs an even last dimension, got K={K}")
    if diag is not None and diag.shape != (K,):
        raise ValueError(f"diag must have shape ({K},), got {tuple(diag.shape)}")
    for name, p in (("p1", p1), ("p2", p2)):
        if p is not None and (p.ndim != 2 or p.shape[0] != p.shape[1]):
            raise ValueError(f"{name} must be a square matrix, got {tuple(p.shape)}")
    if isinstance(clip, torch.Tensor) and clip.numel() != 1:
        raise ValueError(f"clip must be a float or a one-element tensor, got shape {tuple(clip.shape)}")
    if not _use_triton(backend, x):
        return reference.quantize_activation_int4(x, diag, p1, p2, clip)
    if p1 is not None or p2 is not None:
        p1, p2 = reference._complete_pair(p1, p2, K, x.device)
    from faircalib.kernels import quantize_triton
    return quantize_triton.quantize_activation_int4(x, diag, p1, p2, clip, _interpreted(x))


def _check_gemm(a_packed, w_packed):
    if a_packed.dtype != torch.uint8 or w_packed.dtype != torch.uint8:
        raise ValueError(f"packed operands must be uint8, got {a_packed.dtype} and {w_packed.dtype}")
    if a_packed.ndim != 2 or w_packed.ndim != 2 or a_packed.shape[1] != w_packed.shape[1]:
        raise ValueError(f"need a_packed (M, K/2) and w_packed (N, K/2), got {tuple(a_packed.shape)} and "
                         f"{tuple(w_packed.shape)}")


def w4a4_accumulate(a_packed: torch.Tensor, w_packed: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Exact int32 accumulator A_codes @ W_codesᵀ: (M, K/2) x (N, K/2) uint8 -> (M, N) int32."""
    _check_gemm(a_packed, w_packed)
    if not _use_triton(backend, a_packed):
        return reference.w4a4_accumulate(a_packed, w_packed)
    from faircalib.kernels import gemm_triton
    return gemm_triton.w4a4_gemm(a_packed, w_packed, None, None, None, torch.int32, _interpreted(a_packed))


def w4a4_matmul(a_packed: torch.Tensor, a_scale: torch.Tensor, w_packed: torch.Tensor, w_scale: torch.Tensor,
                bias: torch.Tensor | None = None, out_dtype: torch.dtype = torch.bfloat16,
                backend: str = "auto") -> torch.Tensor:
    """(M, K/2) uint8 with scales (M,) x (N, K/2) uint8 with scales (N,) -> (M, N) out_dtype
    = (A_codes @ W_codesᵀ) * a_scale[:, None] * w_scale[None, :] (+ bias)."""
    _check_gemm(a_packed, w_packed)
    M, N = a_packed.shape[0], w_packed.shape[0]
    if a_scale.shape != (M,) or w_scale.shape != (N,):
        raise ValueError(f"need a_scale ({M},) and w_scale ({N},), got {tuple(a_scale.shape)} and "
                         f"{tuple(w_scale.shape)}")
    if bias is not None and bias.shape != (N,):
        raise ValueError(f"bias must have shape ({N},), got {tuple(bias.shape)}")
    if out_dtype not in (torch.bfloat16, torch.float16, torch.float32):
        raise ValueError(f"out_dtype must be bfloat16, float16 or float32, got {out_dtype}")
    if not _use_triton(backend, a_packed):
        return reference.w4a4_matmul(a_packed, a_scale, w_packed, w_scale, bias, out_dtype)
    from faircalib.kernels import gemm_triton
    return gemm_triton.w4a4_gemm(a_packed, w_packed, a_scale, w_scale, bias, out_dtype, _interpreted(a_packed))


def w4a4_linear(x: torch.Tensor, w_packed: torch.Tensor, w_scale: torch.Tensor, bias: torch.Tensor | None = None,
                diag: torch.Tensor | None = None, p1: torch.Tensor | None = None, p2: torch.Tensor | None = None,
                clip: float | torch.Tensor = 1.0, backend: str = "auto") -> torch.Tensor:
    """A W4A4 linear on x (..., K): fused online transform + int4 quantize, then the W4A4 GEMM against
    packed weights (N, K/2) with per-channel scales (N,). Returns (..., N) in x's dtype."""
    lead = x.shape[:-1]
    a_packed, a_scale = quantize_activation_int4(x.reshape(-1, x.shape[-1]), diag, p1, p2, clip, backend)
    out_dtype = x.dtype if x.dtype in (torch.bfloat16, torch.float16, torch.float32) else torch.float32
    y = w4a4_matmul(a_packed, a_scale, w_packed, w_scale, bias, out_dtype, backend)  # (M, N)
    return y.reshape(*lead, w_packed.shape[0]).to(x.dtype)
