"""Triton int4 pack/unpack in the `faircalib.kernels.packing` layout (two signed nibbles per uint8 along the
last dim, low nibble = even index). Imported lazily by `faircalib.kernels` (importing this module imports
triton; set TRITON_INTERPRET=1 before that to run on CPU). Reference: `kernels/reference.py`."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

_BLOCK = 1024  # byte pairs per program


@triton.jit
def _pack_int4_kernel(q_ptr, out_ptr, n_bytes, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)  # byte index over the flattened tensor
    mask = offs < n_bytes
    lo = tl.load(q_ptr + 2 * offs, mask=mask, other=0).to(tl.int32)  # even element
    hi = tl.load(q_ptr + 2 * offs + 1, mask=mask, other=0).to(tl.int32)  # odd element
    byte = (lo & 0xF) | ((hi & 0xF) << 4)
    tl.store(out_ptr + offs, byte.to(tl.uint8), mask=mask)


@triton.jit
def _unpack_int4_kernel(p_ptr, out_ptr, n_bytes, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n_bytes
    b = tl.load(p_ptr + offs, mask=mask, other=0).to(tl.int32)  # 0..255
    lo = ((b & 0xF) ^ 8) - 8  # sign-extend the low nibble
    hi = (((b >> 4) & 0xF) ^ 8) - 8
    tl.store(out_ptr + 2 * offs, lo.to(tl.int8), mask=mask)
    tl.store(out_ptr + 2 * offs + 1, hi.to(tl.int8), mask=mask)


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """(..., K) int8 codes in [-8, 7] -> (..., K/2) uint8. Range is not checked here (the dispatcher does)."""
    q = q.to(torch.int8).contiguous()
    out = torch.empty(*q.shape[:-1], q.shape[-1] // 2, dtype=torch.uint8, device=q.device)
    n = out.numel()
    if n:
        _pack_int4_kernel[(triton.cdiv(n, _BLOCK),)](q, out, n, BLOCK=_BLOCK)
    return out


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """(..., K/2) uint8 -> (..., K) int8."""
    packed = packed.contiguous()
    out = torch.empty(*packed.shape[:-1], packed.shape[-1] * 2, dtype=torch.int8, device=packed.device)
    n = packed.numel()
    if n:
        _unpack_int4_kernel[(triton.cdiv(n, _BLOCK),)](packed, out, n, BLOCK=_BLOCK)
    return out
