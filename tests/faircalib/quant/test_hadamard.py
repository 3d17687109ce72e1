"""Hadamard constructions, the orthogonal fallbacks and the online rotation module."""
from __future__ import annotations

import math

import pytest
import torch

from faircalib.quant.hadamard import (
    OnlineRotation,
    apply_online_rotation,
    hadamard_matrix,
    hadamard_order_split,
    kron_apply,
    orthogonal_for_size,
    random_hadamard,
    structured_orthogonal,
)

# Sylvester, Paley I (12, 20, 44), Paley II (28, 36, 76, 148), and mixed a·2^j
SUPPORTED = [1, 2, 4, 8, 12, 20, 24, 28, 36, 44, 48, 64, 76, 96, 148, 256, 296]


def _eye(n: int) -> torch.Tensor:
    return torch.eye(n, dtype=torch.float64)


@pytest.mark.parametrize("n", SUPPORTED)
def test_hadamard_is_orthonormal_with_pm_entries(n):
    h = hadamard_matrix(n)
    assert h.shape == (n, n) and h.dtype == torch.float64
    assert torch.allclose(h @ h.T, _eye(n), atol=1e-12)
    assert torch.allclose(h.abs(), torch.full_like(h, 1 / math.sqrt(n)), atol=1e-14)  # entries ±1/sqrt(n)


def test_hadamard_dtype_and_unsupported_orders():
    assert hadamard_matrix(12, dtype=torch.float32).dtype == torch.float32
    for n in (3, 6, 90, 184, 0):  # 184 = 8·23: exists in the literature but not built in
        with pytest.raises(ValueError, match="Hadamard"):
            hadamard_matrix(n)


def test_real_model_sizes_are_full_hadamard_orders():
    # LLaDA-8B d_model/d_ff, Dream-7B d_model/d_ff (18944 = 148·128 via Paley II, q = 73)
    assert hadamard_order_split(4096) == (1, 4096)
    assert hadamard_order_split(12288) == (12, 1024)
    assert hadamard_order_split(3584) == (28, 128)
    assert hadamard_order_split(18944) == (148, 128)
    spec = structured_orthogonal(18944, seed=0)
    assert spec.kind == "hadamard" and spec.sizes == (148, 16, 8)  # never densified
    x = torch.randn(3, 18944, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = spec.apply(x)
    assert torch.allclose(y.norm(dim=-1), x.norm(dim=-1), rtol=1e-12)  # orthogonal
    assert torch.allclose(spec.apply_t(y), x, atol=1e-12)  # Qᵀ inverts Q


def test_random_hadamard_signs_then_hadamard():
    q = random_hadamard(48, seed=3)
    assert torch.allclose(q @ q.T, _eye(48), atol=1e-12)
    assert torch.equal(q, random_hadamard(48, seed=3))
    assert not torch.equal(q, random_hadamard(48, seed=4))
    s = torch.diagonal(q @ hadamard_matrix(48).T)  # q = diag(s) H  =>  q Hᵀ = diag(s)
    assert torch.allclose(s.abs(), torch.ones(48, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(q, torch.diag(s) @ hadamard_matrix(48), atol=1e-12)
    assert (s > 0).any() and (s < 0).any()


def test_orthogonal_for_size_kinds():
    q, kind = orthogonal_for_size(96, seed=0)
    assert kind == "hadamard" and torch.allclose(q.abs() * math.sqrt(96), torch.ones(96, 96, dtype=torch.float64))
    q, kind = orthogonal_for_size(184, seed=0)
    assert kind == "block_hadamard(8 x 23)"
    assert torch.allclose(q @ q.T, _eye(184), atol=1e-12)
    mask = torch.block_diag(*[torch.ones(8, 8, dtype=torch.float64)] * 23)
    assert torch.count_nonzero(q * (1 - mask)) == 0 and torch.count_nonzero(q * mask) == 184 * 8
    q, kind = orthogonal_for_size(90, seed=0)  # 90 = 2·45: no Hadamard, power-of-two part 2 < 8
    assert kind == "random_orthogonal" and torch.allclose(q @ q.T, _eye(90), atol=1e-12)
    assert torch.equal(q, orthogonal_for_size(90, seed=0)[0])
    assert orthogonal_for_size(96, 0, prefer="block_hadamard")[1] == "block_hadamard(32 x 3)"
    assert orthogonal_for_size(96, 0, prefer="random_orthogonal")[1] == "random_orthogonal"
    assert orthogonal_for_size(184, 0, min_block=16)[1] == "random_orthogonal"
    with pytest.raises(ValueError, match="prefer"):
        orthogonal_for_size(8, 0, prefer="fast")


def test_kron_apply_matches_dense_kron():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(3, 3, generator=g, dtype=torch.float64), torch.randn(4, 4, generator=g, dtype=torch.float64)
    s = torch.tensor([1.0, -1.0] * 12, dtype=torch.float64)
    x = torch.randn(2, 5, 24, generator=g, dtype=torch.float64)
    dense = torch.diag(s) @ torch.kron(torch.kron(a, torch.eye(2, dtype=torch.float64)), b)
    assert torch.allclose(kron_apply(x, (a, 2, b), s), x @ dense, atol=1e-12)


@pytest.mark.parametrize("n", [96, 184, 90])
def test_online_rotation_matches_dense(n):
    spec = structured_orthogonal(n, seed=5)
    q = spec.dense()
    x = torch.randn(2, 7, n, generator=torch.Generator().manual_seed(0))
    ref = (x.double() @ q).float()
    for mod in (OnlineRotation(spec), OnlineRotation(q)):
        assert (mod(x) - ref).abs().max() < 1e-5
    assert (apply_online_rotation(x, q) - ref).abs().max() < 1e-5
    assert (apply_online_rotation(x, spec) - ref).abs().max() < 1e-5


def test_online_rotation_dtype_buffers_and_state_dict():
    mod = OnlineRotation(structured_orthogonal(184, seed=0))  # block-Hadamard: identity block + H_8 factors
    assert "block_hadamard(8 x 23)" in repr(mod)
    names = set(mod.state_dict())
    assert "signs" in names and all(mod.state_dict()[k].dtype == torch.float32 for k in names)
    assert sum(v.numel() for v in mod.state_dict().values()) < 184 * 184  # structured, not dense
    mod = mod.to(torch.bfloat16)  # model.to(dtype) must not round the rotation
    assert all(b.dtype == torch.float32 for b in mod.buffers())
    x = torch.randn(4, 184, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    y = mod(x)
    assert y.dtype == torch.bfloat16
    ref = x.double() @ structured_orthogonal(184, seed=0).dense()
    assert (y.double() - ref).abs().max() < 2e-2  # only the output rounding to bf16
