"""Log-likelihood estimates for masked-diffusion LMs, as LLaDA's evaluation defines them.

A dLLM has no left-to-right factorisation, so log p(continuation | context) is estimated through the
masked-diffusion bound. For a continuation of L tokens, draw a mask count m uniformly from 1..L and a
uniformly random set S of m continuation positions, replace them by [MASK] (the context stays
observed) and score the masked tokens:

    NLL_hat(S) = (L / m) * sum_{i in S} CE_i(x with S masked)            (CE: cross-entropy, nats)

    target  T  = E_m E_S [NLL_hat] = sum_{S != {}} NLL_hat(S) / (L * C(L, |S|))

T is an upper bound on -log p(continuation | context) (the discrete-time ELBO with the 1/ratio
weight); loglikelihood = -T. The Monte Carlo estimate averages `mc_num` draws with stratified mask
counts: one uniform offset k0 in 1..L per request, row j masks m_j = ((k0 - 1 + floor(j L / n)) mod L) + 1
tokens, so each m_j is marginally uniform (the estimate is unbiased for T) and the counts spread
evenly over 1..L (lower variance than independent draws; LLaDA's eval does the same per batch).

`exact_when_cheap`: when 2^L - 1 <= mc_num the expectation is computed exactly by enumerating every
non-empty S with weight 1 / (|S| * C(L, |S|)): the same target, zero variance, fewer forward passes
(a one-token continuation needs one pass instead of mc_num).

Determinism: each request's draws come from a generator seeded by sha256(seed, context, continuation),
so an estimate does not depend on batching or on the other requests.

`greedy_matches`: whether greedy diffusion decoding of L tokens after the context (the model's
default policy, steps = L) reproduces the continuation (lm-eval's `is_greedy`).

`rolling_pairs`: the windows `loglikelihood_rolling` scores: the first window predicts up to max_len - 1
tokens after a one-token prefix (BOS or EOS); each later window predicts the next max_len - context_len
tokens after up to context_len preceding tokens (context_len = 0: after the prefix again); every token
is predicted exactly once.

Module boundary: token ids in, numbers out; no lm-eval and no text here.
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from faircalib.bf16 import fast_bf16
from faircalib.errors import ConfigError

Pair = tuple[Sequence[int], Sequence[int]]  # (context ids, continuation ids)


@dataclass(frozen=True)
class MaskPlan:
    """The masked copies of one request. NLL estimate = sum_r weights[r] * sum_{i: masks[r, i]} CE_i."""

    masks: torch.Tensor  # (R, L) bool
    weights: torch.Tensor  # (R,) float64

    @property
    def rows(self) -> int:
        return int(self.masks.shape[0])


def exact_plan(L: int) -> MaskPlan:
    """Every non-empty subset of L positions, weighted by 1 / (|S| * C(L, |S|))."""
    if L < 1:
        raise ConfigError(f"continuation length {L}: must be >= 1")
    codes = torch.arange(1, 2 ** L)  # (R,)
    masks = (codes[:, None] >> torch.arange(L)[None, :]) & 1 == 1  # (R, L)
    m = masks.sum(1)
    weights = torch.tensor([1.0 / (int(k) * math.comb(L, int(k))) for k in m], dtype=torch.float64)
    return MaskPlan(masks, weights)


def mc_plan(L: int, n: int, generator: torch.Generator) -> MaskPlan:
    """n stratified Monte Carlo draws: mask counts m_j = ((k0 - 1 + floor(j L / n)) mod L) + 1."""
    if L < 1 or n < 1:
        raise ConfigError(f"mc_plan needs L >= 1 and n >= 1 (got L={L}, n={n})")
    k0 = int(torch.randint(1, L + 1, (), generator=generator))
    counts = [((k0 - 1 + (j * L) // n) % L) + 1 for j in range(n)]
    masks = torch.zeros(n, L, dtype=torch.bool)
    for j, m in enumerate(counts):
        masks[j, torch.randperm(L, generator=generator)[:m]] = True
    weights = torch.tensor([L / (m * n) for m in counts], dtype=torch.float64)
    return MaskPlan(masks, weights)


def request_seed(seed: int, context: Sequence[int], continuation: Sequence[int]) -> int:
    h = hashlib.sha256(f"{seed}|{list(context)}|{list(continuation)}".encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


def plan_for(context: Sequence[int], continuation: Sequence[int], mc_num: int, seed: int,
             exact_when_cheap: bool = True) -> MaskPlan:
    L = len(continuation)
    if exact_when_cheap and 2 ** L - 1 <= mc_num:
        return exact_plan(L)
    g = torch.Generator().manual_seed(request_seed(seed, context, continuation))
    return mc_plan(L, mc_num, g)


def _device(model: Any) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _check_pairs(pairs: Sequence[Pair]) -> list[tuple[list[int], list[int]]]:
    out = []
    for i, (ctx, cont) in enumerate(pairs):
        ctx, cont = [int(t) for t in ctx], [int(t) for t in cont]
        if not cont:
            raise ConfigError(f"request {i}: empty continuation (nothing to score)")
        out.append((ctx, cont))
    return out


@torch.no_grad()
def masked_nll(model: Any, pairs: Sequence[Pair], mc_num: int = 128, batch_size: int = 32, seed: int = 0,
               exact_when_cheap: bool = True, progress=None) -> list[float]:
    """Estimated NLL (nats, >= 0; the target T of the module docstring) of each continuation given its
    context. Rows (masked copies) of all requests are batched together, `batch_size` rows per forward
    pass, left-padded (exact for these RoPE models), longest first."""
    if not isinstance(mc_num, int) or mc_num < 1:
        raise ConfigError(f"mc_num={mc_num!r}: must be an integer >= 1")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size={batch_size!r}: must be an integer >= 1")
    reqs = _check_pairs(pairs)
    mask_id, pad_id = int(model.mask_token_id), int(getattr(model.config, "pad_token_id", None) or 0)
    device = _device(model)
    plans = [plan_for(c, x, mc_num, seed, exact_when_cheap) for c, x in reqs]
    order = sorted(range(len(reqs)), key=lambda i: -(len(reqs[i][0]) + len(reqs[i][1])))
    rows = [(i, r) for i in order for r in range(plans[i].rows)]  # (request, row of its plan)
    totals = [0.0] * len(reqs)
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        T = max(len(reqs[i][0]) + len(reqs[i][1]) for i, _ in chunk)
        Lmax = max(len(reqs[i][1]) for i, _ in chunk)
        B = len(chunk)
        ids = torch.full((B, T), pad_id, dtype=torch.long)
        attn = torch.zeros((B, T), dtype=torch.long)
        target = torch.zeros((B, Lmax), dtype=torch.long)  # continuation, right-aligned
        scored = torch.zeros((B, Lmax), dtype=torch.bool)  # masked continuation positions
        weight = torch.zeros(B, dtype=torch.float64)
        for b, (i, r) in enumerate(chunk):
            ctx, cont = reqs[i]
            n, L = len(ctx) + len(cont), len(cont)
            m = plans[i].masks[r]  # (L,)
            row = torch.tensor(ctx + cont, dtype=torch.long)
            row[len(ctx):] = row[len(ctx):].masked_fill(m, mask_id)
            ids[b, T - n:] = row
            attn[b, T - n:] = 1
            target[b, Lmax - L:] = torch.tensor(cont, dtype=torch.long)
            scored[b, Lmax - L:] = m
            weight[b] = plans[i].weights[r]
        mask_arg = None if bool(attn.all()) else attn.to(device)
        with fast_bf16(model):  # a bf16 CPU model where bf16 is emulated: float32-speed GEMMs
            logits = model(ids.to(device), attention_mask=mask_arg, window=(T - Lmax, T)).float()  # (B, Lmax, V)
        logp = F.log_softmax(logits, dim=-1)
        ce = -logp.gather(-1, target.to(device)[..., None]).squeeze(-1).cpu().double()  # (B, Lmax)
        per_row = (ce * scored).sum(1) * weight  # (B,)
        for b, (i, _) in enumerate(chunk):
            totals[i] += float(per_row[b])
        if progress is not None:
            progress(len(chunk))
    return totals


def masked_loglikelihood(model: Any, pairs: Sequence[Pair], **kwargs) -> list[float]:
    """-masked_nll: the log-likelihood estimate lm-eval's `loglikelihood` returns."""
    return [-v for v in masked_nll(model, pairs, **kwargs)]


def rows_needed(pairs: Sequence[Pair], mc_num: int, exact_when_cheap: bool = True) -> int:
    """How many masked rows (forward-pass rows) `masked_nll` will run for these requests."""
    return sum(2 ** len(c) - 1 if exact_when_cheap and 2 ** len(c) - 1 <= mc_num else mc_num for _, c in pairs)


@torch.no_grad()
def greedy_matches(model: Any, pairs: Sequence[Pair], batch_size: int = 32, policy: str | None = None) -> list[bool]:
    """For each (context, continuation): does greedy diffusion decoding of len(continuation) tokens after
    the context, `steps` = that length (one token per step), with `policy` (None = the model's default),
    write exactly the continuation?"""
    from faircalib.diffusion import generate

    reqs = _check_pairs(pairs)
    out = [False] * len(reqs)
    by_len: dict[int, list[int]] = {}
    for i, (_, cont) in enumerate(reqs):
        by_len.setdefault(len(cont), []).append(i)
    for L, idx in sorted(by_len.items()):
        idx = sorted(idx, key=lambda i: len(reqs[i][0]))
        for s in range(0, len(idx), batch_size):
            chunk = idx[s:s + batch_size]
            traj = generate(model, [torch.tensor(reqs[i][0], dtype=torch.long) for i in chunk], policy,
                            gen_length=L, steps=L, block_length=None, temperature=0.0)
            tokens = traj.tokens.cpu()  # (b, L)
            for b, i in enumerate(chunk):
                out[i] = tokens[b].tolist() == reqs[i][1]
    return out


def rolling_pairs(tokens: Sequence[int], prefix_id: int, max_len: int, context_len: int) -> list[tuple[list[int], list[int]]]:
    """Split a document into (context, continuation) windows of at most max_len tokens in total, each token
    a continuation token exactly once (see the module docstring)."""
    if max_len < 2:
        raise ConfigError(f"max_len={max_len}: rolling windows need at least 2 tokens")
    if not 0 <= context_len < max_len - 1:
        raise ConfigError(f"rolling context_len={context_len}: must be in 0..{max_len - 2}")
    tokens = [int(t) for t in tokens]
    if not tokens:
        return []
    first = min(len(tokens), max_len - 1)
    out = [([int(prefix_id)], tokens[:first])]
    pos, step = first, max_len - max(1, context_len)
    while pos < len(tokens):
        end = min(len(tokens), pos + step)
        ctx = tokens[max(0, pos - context_len):pos] if context_len else [int(prefix_id)]
        out.append((ctx, tokens[pos:end]))
        pos = end
    return out
