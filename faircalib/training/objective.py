"""The masked-diffusion training objective (LLaDA's), for pre-training windows and SFT examples.

For each sequence a mask ratio p = (1 - eps) * t + eps with t ~ U(0, 1) is drawn (stratified over the
batch: one draw per row from equal-width strata, then shuffled, which keeps each row's marginal
uniform and lowers the loss variance); every eligible token is replaced by [MASK] with probability p,
and the loss is the cross-entropy of the true token at masked positions weighted by 1/p:

    pre-training:  sum_{masked} CE / p  /  (B * T)                       (LLaDA pre-training)
    SFT:           sum_rows ( sum_{masked answer} CE / p ) / L_ans  / B    (LLaDA SFT; here every row's
                   answer window, EOS fill included, has length L_ans = gen_length)
                   or, with weighting="none", the unweighted mean CE over masked answer tokens

Only answer-window positions are eligible in SFT (the prompt stays clean). Boundary: takes a model
with the DiffusionLM forward signature and token tensors; owns no data or optimiser.

Dream: the model's forward returns position-aligned logits (it realigns Dream's shifted raw logits),
so training on them yields weights in Dream's official shifted convention. Position 0 has no raw
predecessor (the aligned logit reuses raw position 0, as Dream's own generation does), so it is never
masked for shifted-logit models.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from faircalib.training.batches import SFTBatch


@dataclass
class LossOut:
    loss: torch.Tensor  # scalar, differentiable
    masked_tokens: int
    ce_mean: float  # unweighted mean CE over masked tokens (for logging; nan when none masked)


def sample_mask_ratios(n: int, eps: float, gen: torch.Generator) -> torch.Tensor:
    """(n,) mask ratios p in [eps, 1): stratified t ~ U(0,1), p = (1 - eps) t + eps."""
    u = (torch.arange(n, dtype=torch.float32) + torch.rand(n, generator=gen)) / n  # one per stratum
    t = u[torch.randperm(n, generator=gen)]
    return (1.0 - eps) * t + eps


def random_mask(eligible: torch.Tensor, p: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """eligible: (B, T) bool, p: (B,) -> (B, T) bool, each eligible token masked w.p. p of its row."""
    return (torch.rand(eligible.shape, generator=gen) < p[:, None]) & eligible


def _weighted_ce(logits: torch.Tensor, target: torch.Tensor, masked: torch.Tensor,
                 p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (B, L, V), target/masked (B, L), p (B,) -> (sum of CE/p over masked, CE per masked token)."""
    ce = F.cross_entropy(logits[masked], target[masked], reduction="none")  # (n_masked,)
    weight = (1.0 / p)[:, None].expand_as(masked)[masked]  # (n_masked,)
    return (ce * weight).sum(), ce.detach()


def pretrain_loss(model, ids: torch.Tensor, mask_id: int, eps: float, gen: torch.Generator) -> LossOut:
    """LLaDA pre-training loss on fully observed windows ids: (B, T)."""
    B, T = ids.shape
    eligible = torch.ones(B, T, dtype=torch.bool)
    if model.config.logits_shifted:
        eligible[:, 0] = False
    p = sample_mask_ratios(B, eps, gen)
    masked = random_mask(eligible, p, gen)  # (B, T)
    logits = model(ids.masked_fill(masked, mask_id).to(model.device))  # (B, T, V)
    total, ce = _weighted_ce(logits, ids.to(logits.device), masked.to(logits.device), p.to(logits.device))
    return LossOut(total / (B * T), int(masked.sum()), float(ce.mean()) if ce.numel() else float("nan"))


def sft_loss(model, batch: SFTBatch, mask_id: int, eps: float, gen: torch.Generator,
             weighting: str = "inv_t") -> LossOut:
    """SFT loss: only the answer window (last gen_length positions) is masked and scored.

    weighting="inv_t": LLaDA's SFT loss (CE / p per masked token, / L_ans / B). weighting="none": the
    plain mean CE over all masked answer tokens of the batch (same masks; rows then count in proportion
    to how many tokens they mask, which shifts weight from nearly-revealed windows to the heavily masked
    states decoding starts from -- it learned the tasks faster in the zoo pilots, see recipes.py)."""
    ids, att, ws = batch.input_ids, batch.attention_mask, batch.window_start
    B, T = ids.shape
    L = T - ws
    eligible = torch.zeros(B, T, dtype=torch.bool)
    eligible[:, ws:] = True
    p = sample_mask_ratios(B, eps, gen)
    masked = random_mask(eligible, p, gen)  # (B, T), False on the prompt
    dev = model.device
    logits = model(ids.masked_fill(masked, mask_id).to(dev), attention_mask=att.to(dev), window=(ws, T))  # (B, L, V)
    if weighting == "none":
        m = masked[:, ws:].to(dev)
        ce = F.cross_entropy(logits[m], ids[:, ws:].to(dev)[m], reduction="none")  # (n_masked,)
        loss = ce.mean() if ce.numel() else logits.sum() * 0.0
        return LossOut(loss, int(masked.sum()), float(ce.detach().mean()) if ce.numel() else float("nan"))
    if weighting != "inv_t":
        raise ValueError(f"weighting={weighting!r}; allowed: inv_t, none")
    total, ce = _weighted_ce(logits, ids[:, ws:].to(dev), masked[:, ws:].to(dev), p.to(dev))
    return LossOut(total / (B * L), int(masked.sum()), float(ce.mean()) if ce.numel() else float("nan"))
