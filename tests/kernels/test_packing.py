import pytest
import torch
from faircalib.kernels.packing import pack, pack_int4, qrange, unpack, unpack_int4


def test_int4_roundtrip_all_values():
    q = torch.arange(-8, 8, dtype=torch.int8).repeat(3, 2)  # (3, 32) covers every nibble pair
    p = pack_int4(q)
    assert p.shape == (3, 16) and p.dtype == torch.uint8
    assert torch.equal(unpack_int4(p), q)


def test_int4_layout_low_nibble_is_even_index():
    q = torch.tensor([[1, -1, 7, -8]])
    assert pack_int4(q).tolist() == [[0xF1, 0x87]]


def test_int4_rejects_odd_and_out_of_range():
    with pytest.raises(ValueError, match="even last dimension"):
        pack_int4(torch.zeros(2, 3, dtype=torch.int8))
    with pytest.raises(ValueError, match="outside"):
        pack_int4(torch.tensor([[8, 0]]))


@pytest.mark.parametrize("bits", [3, 4, 8])
def test_pack_by_bits(bits):
    lo, hi = qrange(bits)
    q = torch.randint(lo, hi + 1, (5, 8), generator=torch.Generator().manual_seed(bits)).to(torch.int8)
    p = pack(q, bits)
    assert p.numel() == (20 if bits <= 4 else 40)
    assert torch.equal(unpack(p, bits), q)
