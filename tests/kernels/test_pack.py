"""Triton int4 pack/unpack are bit-exact with faircalib.kernels.packing (the checkpoint layout)."""
from __future__ import annotations

import pytest
import torch
from faircalib.kernels import packing

from faircalib import kernels as fk


@pytest.mark.parametrize("shape", [(1, 2), (7, 34), (3, 1030), (2, 5, 64)])  # (3, 1030): >1 program + tail mask
def test_pack_matches_reference_layout(dev, gen, shape):
    q = torch.randint(-8, 8, shape, generator=gen, dtype=torch.int8)
    got = fk.pack_int4(q.to(dev), backend="triton").cpu()
    assert got.dtype == torch.uint8 and got.shape == (*shape[:-1], shape[-1] // 2)
    assert torch.equal(got, packing.pack_int4(q))


def test_pack_accepts_wider_int_dtypes(dev, gen):
    q = torch.randint(-8, 8, (4, 32), generator=gen, dtype=torch.int64)
    assert torch.equal(fk.pack_int4(q.to(dev), backend="triton").cpu(), packing.pack_int4(q))


def test_unpack_every_byte_value_matches_reference(dev):
    b = torch.arange(256, dtype=torch.int32).to(torch.uint8).reshape(8, 32)
    got = fk.unpack_int4(b.to(dev), backend="triton").cpu()
    assert got.dtype == torch.int8 and got.shape == (8, 64)
    assert torch.equal(got, packing.unpack_int4(b))
    assert int(got.min()) == -8 and int(got.max()) == 7


@pytest.mark.parametrize("shape", [(5, 18), (3, 2050)])
def test_unpack_inverts_pack(dev, gen, shape):
    q = torch.randint(-8, 8, shape, generator=gen, dtype=torch.int8).to(dev)
    assert torch.equal(fk.unpack_int4(fk.pack_int4(q, backend="triton"), backend="triton"), q)


def test_pack_rejects_out_of_range_and_odd_k(dev):
    with pytest.raises(ValueError, match="outside"):
        fk.pack_int4(torch.tensor([[8, 0]], dtype=torch.int8).to(dev), backend="triton")
    with pytest.raises(ValueError, match="even"):
        fk.pack_int4(torch.zeros(2, 3, dtype=torch.int8).to(dev), backend="triton")
