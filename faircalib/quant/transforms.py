"""FlatQuant-style learnable affine transforms (docs/method.md §5), one per activation point.

    x_t = (x ⊙ d) · (P1 ⊗ P2)          online, on the activation (per token)
    W_t = (W ⊘ d) · (P1 ⊗ P2)^-T       folded into the weight, so x_t W_tᵀ = x Wᵀ

P1 (n1, n1) and P2 (n2, n2) with n1·n2 = in_features, n1 ≤ n2 the most balanced factorisation; d is the
per-channel diagonal scale with SmoothQuant init d = max|W|^(1-a) / max|x|^a. The Kronecker product is
never formed: with x viewed as X (…, n1, n2) (row-major: feature i·n2 + j = X[i, j]),
x (P1 ⊗ P2) = P1ᵀ X P2 — two small matmuls.

Boundary: pure math + the learnable `KroneckerTransform` module; quantizers live in quantizer.py,
fake-quant modules in fake.py, the deployed (folded) transform in runtime.py.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

_EPS = 1e-5


def balanced_factors(n: int) -> tuple[int, int]:
    """(n1, n2) with n1·n2 = n, n1 ≤ n2 and n1 the largest divisor ≤ sqrt(n) (most balanced)."""
    if n < 1:
        raise ValueError(f"cannot factor {n}")
    n1 = max(d for d in range(1, math.isqrt(n) + 1) if n % d == 0)
    return n1, n // n1


def kron_apply(x: torch.Tensor, p1: torch.Tensor, p2: torch.Tensor) -> torch.Tensor:
    """x @ (p1 ⊗ p2) on the last dim without forming the product. x: (…, n1·n2) -> (…, n1·n2)."""
    n1, n2 = p1.shape[0], p2.shape[0]
    lead = x.shape[:-1]
    X = x.reshape(*lead, n1, n2)  # (…, n1, n2)
    Y = torch.matmul(torch.matmul(p1.transpose(0, 1), X), p2)  # P1ᵀ X P2: (…, n1, n2)
    return Y.reshape(*lead, n1 * n2)


def absmax_observer(stats: dict[str, torch.Tensor]) -> Callable[[str, torch.Tensor], None]:
    """Stage II observer (faircalib.quant.methods): per activation point, the running max |x| over every
    calibration token and channel, (K,) float32 on the CPU in `stats[point]` (the `smooth_scale` input)."""
    def observe(point: str, x: torch.Tensor) -> None:
        m = x.detach().abs().reshape(-1, x.shape[-1]).amax(0).float().cpu()  # (K,)
        stats[point] = m if point not in stats else torch.maximum(stats[point], m)
    return observe


def smooth_scale(w_absmax: torch.Tensor, x_absmax: torch.Tensor, alpha: float) -> torch.Tensor:
    """SmoothQuant-style diagonal scale d = max|W|^(1-a) / max|x|^a per input channel, (K,) float32.

    w_absmax: (K,) max over output rows of |W| (over all linears sharing the input); x_absmax: (K,)
    max over calibration tokens of |x|. Channels that are zero on either side get d = 1.
    """
    w = w_absmax.double().clamp(min=_EPS)
    x = x_absmax.double().clamp(min=_EPS)
    d = w.pow(1.0 - alpha) / x.pow(alpha)
    dead = (w_absmax <= _EPS) | (x_absmax <= _EPS)
    d = torch.where(dead, torch.ones_like(d), d)
    return d.float()


class KroneckerTransform(nn.Module):
    """Learnable x -> (x ⊙ d)(P1 ⊗ P2) for one activation point (shared by the linears reading it).

    Parameters: p1 (n1, n1), p2 (n2, n2) initialised to the identity; diag (K,) initialised to the
    SmoothQuant scale (or ones). `forward` transforms activations; `transform_weight` maps a linear's
    weight W (N, K) to (W ⊘ d)(P1 ⊗ P2)^-T so the linear's FP function is unchanged. `float64=True`
    on `transform_weight` is the folding precision.
    """

    def __init__(self, in_features: int, diag_init: torch.Tensor | None = None):
        super().__init__()
        self.in_features = in_features
        self.n1, self.n2 = balanced_factors(in_features)
        self.p1 = nn.Parameter(torch.eye(self.n1))
        self.p2 = nn.Parameter(torch.eye(self.n2))
        d = torch.ones(in_features) if diag_init is None else diag_init.detach().float().clone()
        if d.shape != (in_features,):
            raise ValueError(f"diag_init has shape {tuple(d.shape)}, expected ({in_features},)")
        self.diag = nn.Parameter(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(…, K) -> (…, K)."""
        return kron_apply(x * self.diag, self.p1, self.p2)

    def inverse_matrices(self, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """(P1^-1, P2^-1) in `dtype` (differentiable)."""
        return torch.linalg.inv(self.p1.to(dtype)), torch.linalg.inv(self.p2.to(dtype))

    def transform_weight(self, w: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """W (N, K) -> (W ⊘ d)(P1 ⊗ P2)^-T (N, K), computed in `dtype` (default w's dtype).

        (P1 ⊗ P2)^-T = P1^-T ⊗ P2^-T, so this is kron_apply with (P1^-T, P2^-T).
        """
        dtype = dtype or w.dtype
        i1, i2 = self.inverse_matrices(dtype)
        return kron_apply(w.to(dtype) / self.diag.to(dtype), i1.transpose(0, 1), i2.transpose(0, 1))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, n1={self.n1}, n2={self.n2}"
