"""GPTQ: Hessian accumulation, reduced layer error vs RTN, bounds, determinism, dead inputs, act_order."""
from __future__ import annotations

import pytest
import torch
from faircalib.kernels.packing import qrange

from faircalib.quant.gptq import GPTQResult, HessianAccumulator, gptq_factor, gptq_quantize
from faircalib.quant.quantizer import quantize_weight

N, K, T = 48, 200, 1536  # K = 200: blocksize 128 does not divide it


def _layer(seed: int = 0, dead: tuple[int, ...] = (), k: int = K):
    """Correlated inputs X = Z A + noise (T, k) and a weight W (N, k)."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(k, k, generator=g) / k ** 0.5
    x = torch.randn(T, k, generator=g) @ a + 0.1 * torch.randn(T, k, generator=g)
    x[:, list(dead)] = 0.0
    return x, torch.randn(N, k, generator=g)


def _hessian(x: torch.Tensor) -> torch.Tensor:
    acc = HessianAccumulator(x.shape[-1])
    for chunk in x.split(500):
        acc.add(chunk)
    return acc.H


def _out_err(x, w, wq) -> float:
    return float(((x @ w.T - x @ wq.T) ** 2).sum())


def test_hessian_accumulator_running_mean_and_weights():
    x, _ = _layer()
    h = _hessian(x.view(3, T // 3, K))
    ref = 2 * x.double().T @ x.double() / T
    assert h.dtype == torch.float64 and torch.allclose(h, ref, rtol=1e-10, atol=1e-12)
    acc = HessianAccumulator(K)  # zero weights drop tokens (padding); weights give a weighted mean
    w = torch.zeros(T)
    w[:100] = 2.0
    acc.add(x, weight=w)
    acc.add(x[:0])
    assert torch.allclose(acc.H, 2 * x[:100].double().T @ x[:100].double() / 100, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("bits", [3, 4])
@pytest.mark.parametrize("act_order", [False, True])
def test_gptq_beats_rtn_on_layer_output(bits, act_order):
    x, w = _layer()
    codes, s = quantize_weight(w, bits)
    rtn = _out_err(x, w, codes.float() * s[:, None])
    res = gptq_quantize(w, _hessian(x), bits, act_order=act_order)
    err = _out_err(x, w, res.weight)
    print(f"W{bits} act_order={act_order}: rtn_err={rtn:.4g} gptq_err={err:.4g} ratio={err / rtn:.3f}")
    assert err < 0.7 * rtn


def test_gptq_codes_scales_and_dequant_consistent():
    x, w = _layer()
    for bits in (2, 4, 8):
        res = gptq_quantize(w, _hessian(x), bits, blocksize=64)
        lo, hi = qrange(bits)
        assert isinstance(res, GPTQResult) and res.codes.dtype == torch.int8 and res.codes.shape == (N, K)
        assert lo <= int(res.codes.min()) and int(res.codes.max()) <= hi
        assert torch.allclose(res.scales, quantize_weight(w, bits)[1])  # scales as RTN: once, from W
        assert torch.equal(res.weight, res.codes.float() * res.scales[:, None])
    clipped = gptq_quantize(w, _hessian(x), 4, clip=0.8)
    assert torch.allclose(clipped.scales, quantize_weight(w, 4, clip=0.8)[1])


def test_gptq_deterministic_and_blocksize_invariant():
    x, w = _layer(seed=1)
    h = _hessian(x)
    a = gptq_quantize(w, h, 4)
    assert torch.equal(a.codes, gptq_quantize(w, h, 4).codes)
    # lazy block updates are an exact reordering of the same arithmetic: any blocksize, same codes
    for bs in (37, 200, 512):
        same = (gptq_quantize(w, h, 4, blocksize=bs).codes == a.codes).float().mean()
        assert same > 0.995


def _naive_gptq(w, h, bits, damp=0.01):
    """Reference without Cholesky or blocks: OBS update with an explicitly downdated inverse Hessian."""
    k = w.shape[1]
    w = w.double().clone()
    s = quantize_weight(w.float(), bits)[1].double()[:, None]
    lo, hi = qrange(bits)
    h = h + damp * torch.diagonal(h).mean() * torch.eye(k, dtype=torch.float64)
    hinv = torch.linalg.inv(h)
    codes = torch.zeros_like(w)
    for i in range(k):
        q = torch.clamp(torch.round(w[:, i:i + 1] / s), lo, hi)
        codes[:, i] = q[:, 0]
        err = (w[:, i] - q[:, 0] * s[:, 0]) / hinv[i, i]
        w[:, i:] -= err[:, None] * hinv[i, i:][None, :]
        hinv = hinv - hinv[:, i:i + 1] @ hinv[i:i + 1, :] / hinv[i, i]  # remove column i
    return codes


def test_gptq_matches_naive_obs_reference():
    x, w = _layer(seed=2, k=72)
    h = _hessian(x)
    same = (gptq_quantize(w, h, 3, blocksize=32).codes.double() == _naive_gptq(w, h, 3)).float().mean()
    assert same > 0.99


def test_gptq_dead_inputs():
    dead = (0, 7, 150)
    x, w = _layer(dead=dead)
    h = _hessian(x)
    assert torch.all(torch.diagonal(h)[list(dead)] == 0)
    for act_order in (False, True):
        res = gptq_quantize(w, h, 4, act_order=act_order)
        assert torch.isfinite(res.weight).all()
        assert torch.all(res.codes[:, list(dead)] == 0)  # weights on always-zero inputs are zeroed
        codes, s = quantize_weight(w, 4)
        assert _out_err(x, w, res.weight) < 0.7 * _out_err(x, w, codes.float() * s[:, None])


def test_gptq_rejects_wrong_hessian_shape():
    with pytest.raises(ValueError, match="expected"):
        gptq_quantize(torch.zeros(4, 8), torch.eye(6, dtype=torch.float64), 4)


@pytest.mark.parametrize("act_order", [False, True])
def test_in_place_factorisation_equals_the_torch_one(act_order):
    h = _hessian(_layer(seed=3, dead=(5,))[0])
    ref = gptq_factor(h, act_order=act_order)  # consume=False: torch's cholesky / cholesky_inverse
    h_given = h.clone()
    got = gptq_factor(h_given, act_order=act_order, consume=True)  # LAPACK in h_given's storage
    torch.testing.assert_close(got.hinv, ref.hinv, rtol=1e-6, atol=1e-7)
    assert torch.equal(got.dead, ref.dead) and (got.perm is None) == (ref.perm is None)
    assert torch.all(torch.tril(got.hinv, -1) == 0)  # upper triangular
    if not act_order:  # the caller's buffer was used (and is now the factor)
        assert torch.allclose(torch.triu(h_given).float(), got.hinv, rtol=1e-6, atol=1e-7)


def test_a_hessian_that_is_not_positive_definite_gets_a_clear_error():
    h = -torch.eye(8, dtype=torch.float64)  # negative diagonal: damping cannot save it
    with pytest.raises(torch.linalg.LinAlgError, match="not positive-definite.*gptq_damp"):
        gptq_factor(h, consume=True)
