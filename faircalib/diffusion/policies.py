"""Commit policies: given one step's window logits, which still-masked positions to commit and which
token to write there (docs/method.md §1; the official LLaDA `generate.py` and Dream `diffusion_generate`).

Every function works on the answer window only and on a whole batch: logits (B, L, V), eligibility
masks (B, L), per-row counts k (B,). Randomness comes only from the explicit `torch.Generator`s passed
in (never the global RNG). Top-k ties are broken towards the lower position (stable sort), so hand-made
cases are deterministic (the official code leaves tie order to `torch.topk`).

Module boundary: pure tensor functions; the step loop lives in engine.py.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

NEG_INF = float("-inf")


# -- token proposals --------------------------------------------------------------------------------
def add_gumbel_noise(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    """LLaDA's `add_gumbel_noise`: exp(logits) / (-log U)^temperature in float64 (argmax-equivalent to
    logits + temperature * Gumbel). temperature == 0 returns the logits unchanged."""
    if temperature == 0:
        return logits
    logits64 = logits.to(torch.float64)
    noise = torch.rand(logits64.shape, dtype=torch.float64, device=logits.device, generator=generator)
    return logits64.exp() / (-torch.log(noise)) ** temperature


def llada_proposals(logits: torch.Tensor, temperature: float,
                    generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """LLaDA: x0 = argmax of the (optionally Gumbel-noised) logits; confidence = softmax probability of
    x0 under the *non-noised* logits. logits: (B, L, V) -> x0 (B, L) int64, p_x0 (B, L) float32."""
    x0 = add_gumbel_noise(logits, temperature, generator).argmax(dim=-1)  # (B, L)
    p = F.softmax(logits, dim=-1)  # (B, L, V)
    p_x0 = p.gather(-1, x0.unsqueeze(-1)).squeeze(-1)  # (B, L)
    return x0, p_x0


def dream_sample_tokens(logits: torch.Tensor, temperature: float, generator: torch.Generator | None,
                        confidence: str = "maskgit_plus") -> tuple[torch.Tensor, torch.Tensor]:
    """Dream's `sample_tokens`. logits: (B, L, V) -> (confidence (B, L) float32, x0 (B, L) int64).

    temperature > 0 divides the logits and samples x0 from the softmax; otherwise x0 = argmax.
    confidence: "maskgit_plus" = probability of x0; "topk_margin" = top-1 minus top-2 probability;
    "entropy" = sum p log(p + 1e-10) (negative entropy). All on the tempered probabilities, as Dream.
    """
    if temperature > 0:
        logits = logits / temperature
    probs = F.softmax(logits, dim=-1)  # (B, L, V)
    if temperature > 0:
        B, L, V = probs.shape
        x0 = torch.multinomial(probs.reshape(B * L, V), 1, generator=generator).view(B, L)
        conf = probs.gather(-1, x0.unsqueeze(-1)).squeeze(-1)
    else:
        conf, x0 = probs.max(dim=-1)
    if confidence == "topk_margin":
        top2 = probs.topk(2, dim=-1).values  # (B, L, 2)
        conf = top2[..., 0] - top2[..., 1]
    elif confidence == "entropy":
        conf = (probs * torch.log(probs + 1e-10)).sum(-1)
    elif confidence != "maskgit_plus":
        raise ValueError(f"unknown Dream confidence {confidence!r}")
    return conf, x0


# -- commit-set selection ---------------------------------------------------------------------------
def topk_commit(scores: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Per row, the k[b] highest-scoring positions among those with a finite score (ties -> lower index).
    scores: (B, L) float with -inf for ineligible positions; k: (B,) -> (B, L) bool."""
    B, L = scores.shape
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices  # (B, L)
    take = torch.arange(L, device=scores.device).view(1, L) < k.view(B, 1).to(scores.device)  # (B, L) by rank
    chosen = torch.zeros(B, L, dtype=torch.bool, device=scores.device).scatter(1, order, take)
    return chosen & torch.isfinite(scores)


def gumbel(shape: torch.Size | tuple[int, ...], generator: torch.Generator | None, device: torch.device,
           dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard Gumbel noise -log(-log U) with U ~ U(tiny, 1)."""
    u = torch.rand(shape, generator=generator, device=device, dtype=dtype)
    u = u.clamp_min(torch.finfo(dtype).tiny)
    return -torch.log(-torch.log(u))


def sampled_commit(confidence: torch.Tensor, eligible: torch.Tensor, k: torch.Tensor, alg_temp: float,
                   generator: torch.Generator | None) -> torch.Tensor:
    """Dream's `alg_temp > 0`: draw k[b] positions without replacement from softmax(conf / alg_temp) over
    the eligible positions. Implemented with the Gumbel-top-k trick (top-k of conf/alg_temp + Gumbel),
    which has exactly the distribution of the official `torch.multinomial(..., replacement=False)` but
    stays valid when small alg_temp underflows the softmax. confidence/eligible: (B, L) -> (B, L) bool."""
    keys = confidence.double() / alg_temp + gumbel(confidence.shape, generator, confidence.device, torch.float64)
    keys = keys.masked_fill(~eligible, NEG_INF)  # (B, L)
    return topk_commit(keys, k)


def random_commit(eligible: torch.Tensor, k: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Uniformly random k[b]-subset of the eligible positions (LLaDA's `remasking='random'`: top-k of
    U(0,1) scores). Draws depend only on shapes, so the sets are model-independent for a seed."""
    scores = torch.rand(eligible.shape, generator=generator, device=eligible.device)  # (B, L)
    return topk_commit(scores.masked_fill(~eligible, NEG_INF), k)


def bernoulli_commit(eligible: torch.Tensor, p_transfer: float, generator: torch.Generator | None) -> torch.Tensor:
    """Dream `origin`: each eligible position transfers independently with probability p_transfer."""
    u = torch.rand(eligible.shape, generator=generator, device=eligible.device)  # (B, L)
    return eligible & (u < p_transfer)
