import pytest
import torch

from faircalib.quant.quantizer import fake_quant, quantize_activation, quantize_weight, round_ste


@pytest.mark.parametrize("bits", [3, 4, 8])
def test_weight_codes_bounds_and_roundtrip(bits):
    w = torch.randn(16, 32, generator=torch.Generator().manual_seed(bits))
    q, s = quantize_weight(w, bits)
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    assert q.dtype == torch.int8 and int(q.min()) >= lo and int(q.max()) <= hi
    # symmetric: the row max maps to +-qmax exactly
    assert torch.equal(q.abs().amax(1), torch.full((16,), hi, dtype=torch.int8)) or bits == 3
    err = (q.float() * s[:, None] - w).abs()
    assert bool((err <= s[:, None] / 2 + 1e-6).all())  # round-to-nearest: error <= half a step
    torch.testing.assert_close(fake_quant(w, bits), q.float() * s[:, None])


def test_activation_per_token_scale():
    x = torch.tensor([[1.2, -2.0, 0.5, 0.0], [100.0, 1.0, -40.0, 25.0]])
    q, s = quantize_activation(x, 4)
    torch.testing.assert_close(s.squeeze(1), torch.tensor([2.0 / 7, 100.0 / 7]))
    assert q[0].tolist() == [4, -7, 2, 0] and q[1].tolist() == [7, 0, -3, 2]


def test_a16_is_identity_and_ste_passes_gradient():
    x = torch.randn(3, 8, requires_grad=True)
    assert fake_quant(x, 16) is x
    round_ste(x * 3).sum().backward()
    torch.testing.assert_close(x.grad, torch.full_like(x, 3.0))


def test_clipping_shrinks_range():
    w = torch.randn(4, 64, generator=torch.Generator().manual_seed(0))
    _, s_full = quantize_weight(w, 4)
    _, s_clip = quantize_weight(w, 4, clip=0.8)
    torch.testing.assert_close(s_clip, 0.8 * s_full)
