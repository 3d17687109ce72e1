"""GPTQ weight quantization (Frantar et al., 2022), written from the paper's algorithm.

Quantizes W (N, K) column by column; after each column the rounding error is spread onto the
not-yet-quantized columns using the inverse Hessian of the layer's reconstruction loss
||X Wᵀ - X Ŵᵀ||² (H = 2/n Σ x xᵀ over the layer's input tokens), so later columns compensate.
Scales are symmetric per output channel, computed once from the original W exactly as
`faircalib.quant.quantizer.quantize_weight` does (max|W_row|·clip/qmax), so GPTQ only changes the
integer codes. This module does not collect inputs: the caller feeds `HessianAccumulator` with the
linear's actual inputs (after any online transform).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from faircalib.kernels.quantizer import quantize_codes, symmetric_scale


class HessianAccumulator:
    """Running H = 2/n Σ_t w_t x_t x_tᵀ / mean(w) over tokens, float64 (w = 1 unless `weight` is given)."""

    def __init__(self, in_features: int, device: torch.device | str = "cpu"):
        self.in_features = in_features
        self.H = torch.zeros(in_features, in_features, dtype=torch.float64, device=device)  # (K, K)
        self.n = 0.0  # tokens (or total weight) seen

    @torch.no_grad()
    def add(self, x: torch.Tensor, weight: torch.Tensor | None = None) -> None:
        """x: (..., K) inputs; weight: optional (...) per-token weights (0 drops a token, e.g. padding)."""
        x = x.reshape(-1, self.in_features).to(device=self.H.device, dtype=torch.float64)  # (M, K)
        w = torch.ones(x.shape[0], dtype=torch.float64, device=x.device) if weight is None else \
            weight.reshape(-1).to(device=x.device, dtype=torch.float64)  # (M,)
        total = float(w.sum())
        if total <= 0:
            return
        self.H *= self.n / (self.n + total)  # running mean: rescale the old sum
        self.n += total
        xs = x * (2.0 * w / self.n).sqrt()[:, None]  # (M, K)
        self.H.addmm_(xs.T, xs)  # in place: no (K, K) temporary (2.9 GB in float64 at K = 18944)


@dataclass(frozen=True)
class GPTQResult:
    weight: torch.Tensor  # (N, K) float32, dequantized = codes * scales
    codes: torch.Tensor  # (N, K) int8 in qrange(bits)
    scales: torch.Tensor  # (N,) float32


@dataclass(frozen=True)
class GPTQFactor:
    """What GPTQ needs from a Hessian, shared by every linear reading the same input (q/k/v, gate/up):
    the upper Cholesky factor of the damped inverse Hessian (K, K) float32, the always-zero inputs and
    the act-order permutation (or None)."""

    hinv: torch.Tensor
    dead: torch.Tensor
    perm: torch.Tensor | None


@torch.no_grad()
def gptq_factor(H: torch.Tensor, damp: float = 0.01, act_order: bool = False, *, consume: bool = False) -> GPTQFactor:
    """Factor an input Hessian once (float64 math). consume=True works in H's storage (the caller gives it
    up): on CPU the whole factorisation then runs in that one (K, K) float64 buffer (LAPACK in place,
    `_inverse_factor_in_place`), so the peak is H plus 0.56 matrix (the float32 result and LAPACK's
    workspace; 4.5 GB in all at K = 18944) instead of H plus 2.0 matrices through torch.linalg, which never
    works in place, even with out= (8.6 GB; benchmarks/results/gptq_memory.json)."""
    K = H.shape[0]
    if H.shape != (K, K):
        raise ValueError(f"gptq: H must be square, got {tuple(H.shape)}")
    H = H.detach().to(torch.float64)
    if not consume:
        H = H.clone()
    diag = torch.diagonal(H)
    dead = diag == 0  # inputs that are always zero: weight irrelevant, keep H invertible
    diag[dead] = 1.0
    perm = torch.argsort(diag, descending=True) if act_order else None
    if perm is not None:
        H = H[perm][:, perm]
        diag = torch.diagonal(H)
    diag.add_(damp * diag.mean())
    del diag
    # Upper Cholesky factor U of H⁻¹ (H⁻¹ = UᵀU): row i of U holds the error-propagation coefficients
    # for column i onto columns > i after columns < i are fixed (the paper's Cholesky reformulation).
    if consume and H.device.type == "cpu" and H.is_contiguous():
        U = _inverse_factor_in_place(H)
    else:
        L = torch.linalg.cholesky(H)
        del H
        Hinv = torch.cholesky_inverse(L)
        del L
        U = torch.linalg.cholesky(Hinv, upper=True)
        del Hinv
    return GPTQFactor(hinv=U.to(torch.float32), dead=dead, perm=perm)


def _inverse_factor_in_place(H: torch.Tensor) -> torch.Tensor:
    """The upper Cholesky factor U of H⁻¹ (H⁻¹ = UᵀU), computed inside H's storage: H is a contiguous
    symmetric positive-definite (K, K) float64 CPU tensor, overwritten and returned as U. The LAPACK
    routines torch itself calls (potrf, potri), through scipy's overwrite mode:
    H = L Lᵀ (potrf), H⁻¹ from L (potri), H⁻¹ = M Mᵀ (potrf), U = Mᵀ."""
    import numpy as np
    from scipy.linalg import lapack

    a = H.numpy().T  # the same memory as a Fortran-ordered array; H symmetric, so a == H
    steps = (("potrf", lambda x: lapack.dpotrf(x, lower=1, clean=0, overwrite_a=1)),
             ("potri", lambda x: lapack.dpotri(x, lower=1, overwrite_c=1)),
             ("potrf", lambda x: lapack.dpotrf(x, lower=1, clean=0, overwrite_a=1)))
    for name, step in steps:
        out, info = step(a)
        if info != 0:
            raise torch.linalg.LinAlgError(
                f"gptq: the damped Hessian is not positive-definite (LAPACK {name} info={info}); raise "
                f"gptq_damp")
        if not np.shares_memory(out, a):  # scipy had to copy: carry on in its buffer
            a = out
    # a's lower triangle (Fortran order) holds M, i.e. H's upper triangle (C order) holds Mᵀ = U
    U = H if np.shares_memory(a, H.numpy()) else torch.from_numpy(np.ascontiguousarray(a.T))
    return U.triu_()


@torch.no_grad()
def gptq_quantize(W: torch.Tensor, H: torch.Tensor | None, bits: int, blocksize: int = 128, damp: float = 0.01,
                  act_order: bool = False, clip: float | torch.Tensor = 1.0,
                  factor: GPTQFactor | None = None) -> GPTQResult:
    """GPTQ with lazy block updates. W: (N, K) weight, H: (K, K) input Hessian (`HessianAccumulator.H`),
    or `factor` = gptq_factor(H, damp, act_order) computed once for several linears with the same input.

    damp: fraction of mean(diag H) added to the diagonal. act_order: quantize columns by decreasing
    diag(H) (the returned codes are in the original column order). clip: per-row range shrink (scalar or (N, 1)).
    """
    K = W.shape[1]  # W: (N, K)
    if factor is None:
        if H is None or H.shape != (K, K):
            raise ValueError(f"gptq_quantize: H has shape {None if H is None else tuple(H.shape)}, expected "
                             f"({K}, {K}) for W {tuple(W.shape)}")
        factor = gptq_factor(H, damp, act_order)
    elif factor.hinv.shape != (K, K):
        raise ValueError(f"gptq_quantize: factor is for {factor.hinv.shape[0]} inputs, W {tuple(W.shape)} has {K}")
    W = W.detach().to(torch.float32).clone()  # (N, K), updated in place
    scale = symmetric_scale(W, bits, clip)  # (N, 1), once, from the original W
    W[:, factor.dead.to(W.device)] = 0.0
    perm = factor.perm
    if perm is not None:
        W = W[:, perm.to(W.device)]
    hinv = factor.hinv.to(W.device)  # (K, K)

    Q = torch.zeros_like(W)  # (N, K) integer codes (as float)
    for i1 in range(0, K, blocksize):
        i2 = min(i1 + blocksize, K)
        W1 = W[:, i1:i2].clone()  # (N, B) block being quantized
        E1 = torch.zeros_like(W1)  # (N, B) scaled errors, for the lazy update of later blocks
        U1 = hinv[i1:i2, i1:i2]  # (B, B)
        for j in range(i2 - i1):
            w = W1[:, j]  # (N,)
            q = quantize_codes(w[:, None], scale, bits)[:, 0]  # (N,)
            Q[:, i1 + j] = q
            err = (w - q * scale[:, 0]) / U1[j, j]  # (N,)
            W1[:, j:] -= err[:, None] * U1[j, j:][None, :]  # update the rest of the block
            E1[:, j] = err
        W[:, i2:] -= E1 @ hinv[i1:i2, i2:]  # lazy batch update of all later columns

    if perm is not None:
        Q = Q[:, torch.argsort(perm.to(Q.device))]
    codes = Q.to(torch.int8)
    scales = scale[:, 0].to(torch.float32)
    return GPTQResult(weight=codes.to(torch.float32) * scales[:, None], codes=codes, scales=scales)
