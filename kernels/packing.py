"""Integer packing layout shared by checkpoints (faircalib.checkpoint), the runtime modules
(faircalib.quant.runtime) and the kernels. It lives here, in the lowest numeric layer, so that the
kernels depend on nothing of faircalib.quant (docs/architecture.md).

int4 (also used for int3 and int2 values): two signed 4-bit two's-complement values per uint8 byte,
packed along the **last** dimension (the GEMM reduction dim K for weights (N, K) and activations (M, K)):

    byte[..., j] = (q[..., 2j] & 0xF) | ((q[..., 2j+1] & 0xF) << 4)      # low nibble = even index

so (N, K) int values in [-8, 7] become (N, K/2) uint8; K must be even. int8 values are stored as int8
unchanged. This is the torch reference every Triton kernel is tested against.
"""
from __future__ import annotations

import torch


def qrange(bits: int) -> tuple[int, int]:
    """Signed symmetric integer range for `bits`: (-2^(b-1), 2^(b-1)-1)."""
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def container_bits(bits: int) -> int:
    """Storage width for a bit width: <=4 bits go in int4 nibbles, 5..8 bits in int8."""
    if not 2 <= bits <= 8:
        raise ValueError(f"bit width {bits} unsupported; use 2..8")
    return 4 if bits <= 4 else 8


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """(..., K) integer tensor with values in [-8, 7] -> (..., K/2) uint8."""
    if q.shape[-1] % 2:
        raise ValueError(f"pack_int4 needs an even last dimension, got {q.shape[-1]}")
    q = q.to(torch.int16)
    if q.numel() and (int(q.min()) < -8 or int(q.max()) > 7):
        raise ValueError("pack_int4: values outside [-8, 7]")
    lo = q[..., 0::2] & 0xF
    hi = q[..., 1::2] & 0xF
    return (lo | (hi << 4)).to(torch.uint8)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """(..., K/2) uint8 -> (..., K) int8 with values in [-8, 7]."""
    b = packed.to(torch.int16)
    lo = b & 0xF
    hi = (b >> 4) & 0xF
    lo = torch.where(lo > 7, lo - 16, lo)
    hi = torch.where(hi > 7, hi - 16, hi)
    return torch.stack([lo, hi], dim=-1).flatten(-2).to(torch.int8)


def pack(q: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack integer codes for `bits` into their container (uint8 nibbles for <=4 bits, int8 otherwise)."""
    return pack_int4(q) if container_bits(bits) == 4 else q.to(torch.int8)


def unpack(packed: torch.Tensor, bits: int) -> torch.Tensor:
    return unpack_int4(packed) if container_bits(bits) == 4 else packed.to(torch.int8)
