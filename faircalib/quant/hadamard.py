"""Hadamard and other orthogonal matrices for rotation-based quantization (QuaRot, docs/method.md §5).

Supported Hadamard orders (normalised so H Hᵀ = I): n = a · 2^j where a = 1 (Sylvester) or a is a
**Paley order over a prime field**: a = q + 1 with q prime, q ≡ 3 (mod 4) (Paley I: 4, 8, 12, 20, 24,
32, 44, 48, 60, 68, 72, 80, 84, ...) or a = 2(q + 1) with q prime, q ≡ 1 (mod 4) (Paley II: 12, 28, 36,
60, 76, 84, 108, 148, ...). H_n = H_a ⊗ H_{2^j}. This covers LLaDA-8B (4096 = 2^12, 12288 = 12·2^10)
and Dream-7B (3584 = 28·2^7, 18944 = 148·2^7 via Paley II with q = 73). Prime-power Paley orders and
other exotic constructions are not built in.

Matrices are kept **structured** (`StructuredOrthogonal`: Q = diag(signs) · (F_1 ⊗ F_2 ⊗ ...)) so that
x @ Q costs n·Σ|F_i| instead of n² and the (n, n) matrix is never needed at runtime; `.dense()` builds
it for small n. Fallbacks when n is not a supported Hadamard order (`structured_orthogonal`):
block-Hadamard I_m ⊗ H_{2^k} (2^k the largest power of two dividing n, if >= `min_block`), else a
seeded Haar-random orthogonal matrix. `OnlineRotation` is the nn.Module installed in
`block.act_transforms` (x -> x @ Q on the last dim, float32 math, input dtype out).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

PREFER = ("hadamard", "block_hadamard", "random_orthogonal")


# ------------------------------------------------------------------ Hadamard constructions (±1 entries)
def _is_prime(q: int) -> bool:
    return q >= 2 and all(q % p for p in range(2, math.isqrt(q) + 1))


def _paley_kind(a: int) -> str | None:
    """'I' / 'II' if a Paley construction over a prime field gives a Hadamard matrix of order a."""
    if a % 4:
        return None
    if _is_prime(a - 1) and (a - 1) % 4 == 3:
        return "I"
    if _is_prime(a // 2 - 1) and (a // 2 - 1) % 4 == 1:
        return "II"
    return None


def _jacobsthal(q: int) -> torch.Tensor:
    """(q, q) Jacobsthal matrix Q[i, j] = χ(j - i), χ the quadratic character of GF(q), q prime."""
    residues = {(i * i) % q for i in range(1, q)}
    chi = torch.tensor([0.0] + [1.0 if r in residues else -1.0 for r in range(1, q)], dtype=torch.float64)
    idx = (torch.arange(q)[None, :] - torch.arange(q)[:, None]) % q
    return chi[idx]


def _paley(a: int) -> torch.Tensor:
    """Unnormalised (a, a) ±1 Paley Hadamard matrix (a must satisfy `_paley_kind`)."""
    kind = _paley_kind(a)
    q = a - 1 if kind == "I" else a // 2 - 1
    jac = _jacobsthal(q)
    ones = torch.ones(q, 1, dtype=torch.float64)
    if kind == "I":  # H = I + S, S = [[0, 1ᵀ], [-1, Q]] skew-symmetric (q ≡ 3 mod 4)
        s = torch.cat([torch.cat([torch.zeros(1, 1, dtype=torch.float64), ones.T], 1), torch.cat([-ones, jac], 1)], 0)
        return torch.eye(a, dtype=torch.float64) + s
    # Paley II: symmetric conference matrix C = [[0, 1ᵀ], [1, Q]] (q ≡ 1 mod 4)
    c = torch.cat([torch.cat([torch.zeros(1, 1, dtype=torch.float64), ones.T], 1), torch.cat([ones, jac], 1)], 0)
    h2 = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
    g2 = torch.tensor([[1.0, -1.0], [-1.0, -1.0]], dtype=torch.float64)
    return torch.kron(c, h2) + torch.kron(torch.eye(q + 1, dtype=torch.float64), g2)


def _sylvester(n: int) -> torch.Tensor:
    """Unnormalised (n, n) Sylvester Hadamard, n = 2^k."""
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


def _pow2_part(n: int) -> int:
    return n & -n


def hadamard_order_split(n: int) -> tuple[int, int] | None:
    """(a, 2^j) with n = a·2^j and a in {1} ∪ Paley orders (largest 2^j first), or None if unsupported."""
    if n < 1:
        return None
    b = _pow2_part(n)
    while b >= 1:
        a = n // b
        if a == 1 or _paley_kind(a):
            return a, b
        b //= 2
    return None


def _sylvester_factors(b: int) -> list[torch.Tensor]:
    """Normalised H_b (b = 2^j) as at most two Kronecker factors of ~sqrt(b) each (H_{2^p} ⊗ H_{2^q})."""
    if b == 1:
        return []
    j = b.bit_length() - 1
    sizes = [2 ** ((j + 1) // 2), 2 ** (j // 2)] if j >= 2 else [b]
    return [_sylvester(s) / math.sqrt(s) for s in sizes if s > 1]


# ------------------------------------------------------------------ structured orthogonal matrices
@dataclass(frozen=True)
class StructuredOrthogonal:
    """Q = diag(signs) · (F_1 ⊗ F_2 ⊗ ...), float64. A factor that is an int m stands for I_m."""

    factors: tuple[torch.Tensor | int, ...]
    signs: torch.Tensor | None  # (n,) ±1, applied first (x·diag(s)), or None
    kind: str

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(f if isinstance(f, int) else f.shape[0] for f in self.factors)

    @property
    def n(self) -> int:
        return math.prod(self.sizes)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """x @ Q on the last dim, in x's dtype (use float64 x for folding). (..., n) -> (..., n)."""
        return kron_apply(x, self.factors, self.signs)

    def apply_t(self, x: torch.Tensor) -> torch.Tensor:
        """x @ Qᵀ on the last dim (the inverse rotation)."""
        y = kron_apply(x, tuple(f if isinstance(f, int) else f.T for f in self.factors), None)
        return y if self.signs is None else y * self.signs.to(y)

    def dense(self) -> torch.Tensor:
        """The (n, n) float64 matrix (memory n²·8 bytes: for small n and tests)."""
        return self.apply(torch.eye(self.n, dtype=torch.float64))


def kron_apply(x: torch.Tensor, factors: tuple[torch.Tensor | int, ...], signs: torch.Tensor | None) -> torch.Tensor:
    """x @ (diag(signs) · (F_1 ⊗ ... ⊗ F_k)) on the last dim, without forming the product."""
    sizes = [f if isinstance(f, int) else f.shape[0] for f in factors]
    lead = x.shape[:-1]
    if signs is not None:
        x = x * signs.to(x)
    y = x.reshape(-1, *sizes)  # (M, f_1, ..., f_k)
    for axis, f in enumerate(factors, start=1):
        if isinstance(f, int):  # identity block
            continue
        y = torch.tensordot(y, f.to(y), dims=([axis], [0]))  # contracted axis moves to the end
        y = torch.movedim(y, -1, axis)
    return y.reshape(*lead, -1)


def _random_signs(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2, (n,), generator=g).to(torch.float64) * 2 - 1  # (n,)


def _hadamard_factors(n: int) -> list[torch.Tensor]:
    split = hadamard_order_split(n)
    if split is None:
        raise ValueError(f"no built-in Hadamard matrix of order {n}: supported orders are a·2^j with a = 1 or a "
                         f"Paley order over a prime field (q+1, q≡3 mod 4 prime; 2(q+1), q≡1 mod 4 prime); "
                         f"use orthogonal_for_size for a block-Hadamard / random orthogonal fallback")
    a, b = split
    paley = [_paley(a) / math.sqrt(a)] if a > 1 else []
    return paley + _sylvester_factors(b) or [torch.ones(1, 1, dtype=torch.float64)]


def hadamard_matrix(n: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Normalised (n, n) Hadamard matrix H_a ⊗ H_{2^j} (Paley ⊗ Sylvester); ValueError if unsupported."""
    return StructuredOrthogonal(tuple(_hadamard_factors(n)), None, "hadamard").dense().to(dtype)


def random_hadamard(n: int, seed: int) -> torch.Tensor:
    """QuaRot's randomised Hadamard diag(s)·H, s ~ ±1 (seeded), (n, n) float64, orthogonal.

    Signs go *before* H (x -> (x∘s) H, as QuaRot does): H·diag(s) would only flip output signs and
    leave |x Q| — what quantization sees — identical to the unrandomised |x H|.
    """
    return StructuredOrthogonal(tuple(_hadamard_factors(n)), _random_signs(n, seed), "hadamard").dense()


def _random_orthogonal(n: int, seed: int) -> torch.Tensor:
    """Haar-random (n, n) orthogonal: QR of a seeded Gaussian with the sign of diag(R) fixed."""
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))[None, :]


def structured_orthogonal(n: int, seed: int, prefer: str = "hadamard", randomize: bool = True,
                          min_block: int = 8) -> StructuredOrthogonal:
    """The orthogonal matrix `orthogonal_for_size` describes, kept factored (use this for large n).

    prefer="hadamard": Hadamard if supported, else block-Hadamard, else random orthogonal;
    "block_hadamard" skips the full Hadamard; "random_orthogonal" forces the dense random fallback.
    randomize=True multiplies (block-)Hadamards by a seeded diag(±1) on the left.
    """
    if prefer not in PREFER:
        raise ValueError(f"prefer={prefer!r}; allowed: {', '.join(PREFER)}")
    signs = _random_signs(n, seed) if randomize else None
    if prefer == "hadamard" and hadamard_order_split(n) is not None:
        return StructuredOrthogonal(tuple(_hadamard_factors(n)), signs, "hadamard")
    b = _pow2_part(n)
    if prefer != "random_orthogonal" and b >= min_block:
        m = n // b  # I_m ⊗ H_b: x viewed as (..., m, b), each length-b block rotated by H_b
        return StructuredOrthogonal((m, *_sylvester_factors(b)), signs, f"block_hadamard({b} x {m})")
    return StructuredOrthogonal((_random_orthogonal(n, seed),), None, "random_orthogonal")


def orthogonal_for_size(n: int, seed: int, prefer: str = "hadamard", **kwargs) -> tuple[torch.Tensor, str]:
    """(Q (n, n) float64, kind) with kind "hadamard", "block_hadamard(2^k x m)" or "random_orthogonal".

    Dense: n = 18944 takes 2.9 GB — rotation code uses `structured_orthogonal` instead.
    """
    spec = structured_orthogonal(n, seed, prefer, **kwargs)
    return spec.dense(), spec.kind


# ------------------------------------------------------------------ online transform module
class OnlineRotation(nn.Module):
    """x -> x @ Q on the last dim, for `block.act_transforms` (QuaRot's online Hadamard before down_proj).

    Q is a dense (n, n) tensor or a `StructuredOrthogonal` (applied factor by factor; for
    block-Hadamard as a reshape (..., m, 2^k) and a small matmul). Math in float32, output in x's dtype.
    The factors are float32 buffers (saved in the state dict) that stay float32 under `model.to(dtype)`.
    """

    def __init__(self, q: torch.Tensor | StructuredOrthogonal):
        super().__init__()
        spec = q if isinstance(q, StructuredOrthogonal) else StructuredOrthogonal((q.to(torch.float64),), None, "dense")
        self.kind = spec.kind
        self.n = spec.n
        self._layout: list[int | str] = []  # int = identity block of that size, str = buffer name
        for i, f in enumerate(spec.factors):
            if isinstance(f, int):
                self._layout.append(f)
            else:
                self.register_buffer(f"factor{i}", f.to(torch.float32))
                self._layout.append(f"factor{i}")
        self.register_buffer("signs", None if spec.signs is None else spec.signs.to(torch.float32))

    def _apply(self, fn, recurse=True):  # device moves apply, dtype casts do not (keep float32)
        for name, buf in self._buffers.items():
            if buf is not None:
                self._buffers[name] = buf.to(device=fn(buf[:1]).device)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        factors = tuple(f if isinstance(f, int) else getattr(self, f) for f in self._layout)
        return kron_apply(x.float(), factors, self.signs).to(x.dtype)  # (..., n)

    def extra_repr(self) -> str:
        sizes = [f if isinstance(f, int) else getattr(self, f).shape[0] for f in self._layout]
        return f"n={self.n}, kind={self.kind}, factors={sizes}"


def apply_online_rotation(x: torch.Tensor, q: torch.Tensor | StructuredOrthogonal) -> torch.Tensor:
    """Functional form of `OnlineRotation`: x @ Q on the last dim, float32 math, x's dtype out."""
    if isinstance(q, StructuredOrthogonal):
        return kron_apply(x.float(), q.factors, q.signs).to(x.dtype)
    return (x.float() @ q.to(device=x.device, dtype=torch.float32)).to(x.dtype)
