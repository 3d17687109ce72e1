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
                        confidence: str = "maskgit_plus", top_k: int | None = None,
                        top_p: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Dream's `sample_tokens`. logits: (B, L, V) -> (confidence (B, L) float32, x0 (B, L) int64).

    temperature > 0 divides the logits; then top_p (if < 1) and top_k (if set) filter them (`filter_logits`);
    x0 is sampled from the softmax of the result (temperature > 0) or its argmax. confidence:
    "maskgit_plus" = probability of x0; "topk_margin" = top-1 minus top-2 probability; "entropy" =
    sum p log(p + 1e-10) (negative entropy). All on the tempered, filtered probabilities, as Dream.
    With a filter the work runs in chunks of rows (`_filtered_sample`), so no (B, L, V) copy is made.
    """
    if confidence not in ("maskgit_plus", "topk_margin", "entropy"):
        raise ValueError(f"unknown Dream confidence {confidence!r}")
    if top_k is not None or (top_p is not None and top_p < 1):
        B, L, V = logits.shape
        conf, x0 = _filtered_sample(logits.reshape(B * L, V), temperature, generator, confidence, top_k, top_p)
        return conf.view(B, L), x0.view(B, L)
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
    return conf, x0


# -- Dream's top-k / top-p filters ----------------------------------------------------------------------
ROW_CHUNK_ELEMENTS = 1 << 25  # logits elements per chunk of rows in the filtered path (128 MB of float32)


def filter_logits(logits: torch.Tensor, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """Dream's `top_p_logits` then `top_k_logits` on the last dim, on the whole vocabulary (the reference
    form): top_p keeps the smallest prefix of the descending order whose probability mass exceeds top_p
    (the token crossing it included, the first token always); top_k keeps the tokens >= the k-th largest
    remaining logit (ties kept). Removed entries become finfo(dtype).min. (..., V) -> (..., V)."""
    low = torch.finfo(logits.dtype).min
    if top_p is not None and top_p < 1:
        sorted_logits, order = torch.sort(logits, descending=True)  # (..., V)
        cum = torch.cumsum(F.softmax(sorted_logits, dim=-1), dim=-1)
        drop_sorted = cum > top_p
        drop_sorted[..., 1:] = drop_sorted[..., :-1].clone()  # keep the token that crosses top_p
        drop_sorted[..., 0] = False
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, low)
    if top_k is not None:
        k = min(top_k, logits.shape[-1])
        kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (..., 1)
        logits = logits.masked_fill(logits < kth, low)
    return logits


def _confidence(probs: torch.Tensor, x0: torch.Tensor | None, kind: str, generator: torch.Generator | None,
                sample: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(confidence, index) from probabilities (N, K) whose columns are sorted by descending logit."""
    if sample:
        x0 = torch.multinomial(probs, 1, generator=generator).squeeze(-1)  # (N,)
        conf = probs.gather(-1, x0[:, None]).squeeze(-1)
    else:
        conf, x0 = probs.max(dim=-1)
    if kind == "topk_margin":
        top2 = probs.topk(min(2, probs.shape[-1]), dim=-1).values  # (N, 2)
        conf = top2[:, 0] - (top2[:, 1] if top2.shape[-1] > 1 else 0.0)
    elif kind == "entropy":
        conf = (probs * torch.log(probs + 1e-10)).sum(-1)
    return conf, x0


def _filtered_sample(logits: torch.Tensor, temperature: float, generator: torch.Generator | None, kind: str,
                     top_k: int | None, top_p: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """`dream_sample_tokens` with filters, rows (N, V) processed in chunks of ~ROW_CHUNK_ELEMENTS elements.

    With top_k < V only the k largest logits of a row can survive, and everything Dream computes from the
    filtered distribution (softmax, argmax or sample, probability / margin / entropy confidence) is
    exactly a function of those k values plus the row's full log-normaliser (for top_p's cumulative
    mass); so a chunk keeps (rows, k) values instead of sorting (rows, V). Rows with a tie at the k-th
    value (where Dream keeps more than k tokens) take the whole-vocabulary reference path.
    """
    N, V = logits.shape
    sample = temperature > 0
    dtype = logits.dtype if logits.dtype in (torch.float32, torch.float64) else torch.float32
    conf = torch.empty(N, dtype=dtype, device=logits.device)
    x0 = torch.empty(N, dtype=torch.long, device=logits.device)
    step = max(1, ROW_CHUNK_ELEMENTS // V)
    use_k = top_k is not None and top_k < V
    for a in range(0, N, step):
        x = logits[a:a + step].to(dtype)  # (n, V)
        if sample:
            x = x / temperature
        if use_k:
            vals, idx = torch.topk(x, top_k, dim=-1)  # (n, k), descending
            tied = (x >= vals[:, -1:]).sum(-1) > top_k  # (n,) Dream keeps every tied token
            if top_p is not None and top_p < 1:
                lse = torch.logsumexp(x, dim=-1, keepdim=True)  # (n, 1) the full row's normaliser
                cum = torch.cumsum(torch.exp(vals - lse), dim=-1)  # mass of the sorted prefix
                drop = cum > top_p
                drop[:, 1:] = drop[:, :-1].clone()
                drop[:, 0] = False
                vals = vals.masked_fill(drop, torch.finfo(vals.dtype).min)
            c, j = _confidence(F.softmax(vals, dim=-1), None, kind, generator, sample)
            conf[a:a + step], x0[a:a + step] = c, idx.gather(-1, j[:, None]).squeeze(-1)
            if bool(tied.any()):
                rows = tied.nonzero().squeeze(-1)
                probs = F.softmax(filter_logits(x[rows], top_k, top_p), dim=-1)
                c, j = _confidence(probs, None, kind, generator, sample)
                conf[a + rows], x0[a + rows] = c, j
        else:
            c, j = _confidence(F.softmax(filter_logits(x, top_k, top_p), dim=-1), None, kind, generator, sample)
            conf[a:a + step], x0[a:a + step] = c, j
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
