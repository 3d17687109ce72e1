"""Fast, deterministic fidelity metrics for a dLLM on fully known token sequences.

Every metric uses the same masked inputs: for each mask ratio r in `ratios` and each sequence, a
seed-determined set of round(r * S) positions (at least one) is replaced by [MASK]. The model's
aligned logits at those positions give

  nll        mean cross-entropy of the true token over all masked positions (nats/token)
  kl_to_ref  mean KL(p_ref || p_model) over the same positions (vs an FP reference model)
  top1_agree fraction of masked positions where model and reference argmax agree

This is the masked-diffusion analogue of perplexity (no 1/t ELBO weighting: a plain per-token mean
at fixed ratios, so numbers are comparable across models and quantization methods).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from faircalib.bf16 import fast_bf16

DEFAULT_RATIOS = (0.15, 0.3, 0.5, 0.7, 0.9)


def mask_batch(ids: torch.Tensor, ratio: float, mask_id: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ids: (N, S) -> (masked ids (N, S), mask (N, S) bool); exactly max(1, round(ratio*S)) masks per row."""
    N, S = ids.shape
    k = max(1, round(ratio * S))
    g = torch.Generator().manual_seed(seed)
    scores = torch.rand(N, S, generator=g)
    idx = scores.argsort(dim=1)[:, :k]  # (N, k)
    mask = torch.zeros(N, S, dtype=torch.bool)
    mask.scatter_(1, idx, True)
    return ids.masked_fill(mask, mask_id), mask


@dataclass(frozen=True)
class FidelityResult:
    nll: float
    masked_tokens: int
    kl_to_ref: float | None = None
    top1_agree: float | None = None
    per_ratio_nll: dict | None = None

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


_MAX_LOGIT_ELEMENTS = 1 << 27  # per forward batch: (rows, S, V) float32 logits stay under 512 MB


@torch.no_grad()
def _batch_logits(model, x: torch.Tensor) -> torch.Tensor:
    dev = next(model.parameters()).device
    with fast_bf16(model):
        return model(x.to(dev)).float().cpu()  # (b, S, V)


@torch.no_grad()
def compare_to_reference(model, ids: torch.Tensor, ref=None, ratios=DEFAULT_RATIOS, seed: int = 0,
                         batch_size: int = 8, mask_id: int | None = None) -> FidelityResult:
    """NLL of `model` on masked `ids` (N, S); with `ref`, also KL(ref || model) and top-1 agreement.

    Works batch by batch (model and reference on the same rows), so memory is one batch's (b, S, V) logits
    per model, not the whole set's (5 GB per model at N = 32, S = 256, V = 152k); `batch_size` is lowered
    for large vocabularies to keep a batch's logits under ~512 MB."""
    mask_id = model.mask_token_id if mask_id is None else mask_id
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    if vocab:
        batch_size = max(1, min(batch_size, _MAX_LOGIT_ELEMENTS // max(1, ids.shape[1] * vocab)))
    tot_nll, tot_kl, tot_agree, count = 0.0, 0.0, 0, 0
    per_ratio = {}
    for j, r in enumerate(ratios):
        x, m = mask_batch(ids, r, mask_id, seed * 1000 + j)
        r_nll, r_count = 0.0, 0
        for i in range(0, len(ids), batch_size):
            xb, mb, yb = x[i:i + batch_size], m[i:i + batch_size], ids[i:i + batch_size]
            lp = F.log_softmax(_batch_logits(model, xb)[mb], dim=-1)  # (n_masked, V)
            nll = -lp.gather(1, yb[mb][:, None]).squeeze(1)
            r_nll += float(nll.sum())
            r_count += int(mb.sum())
            if ref is not None:
                lq = F.log_softmax(_batch_logits(ref, xb)[mb], dim=-1)
                tot_kl += float((lq.exp() * (lq - lp)).sum())
                tot_agree += int((lq.argmax(-1) == lp.argmax(-1)).sum())
        per_ratio[str(r)] = r_nll / r_count
        tot_nll += r_nll
        count += r_count
    return FidelityResult(
        nll=tot_nll / count, masked_tokens=count, per_ratio_nll=per_ratio,
        kl_to_ref=None if ref is None else tot_kl / count,
        top1_agree=None if ref is None else tot_agree / count,
    )


def masked_token_nll(model, ids: torch.Tensor, ratios=DEFAULT_RATIOS, seed: int = 0, batch_size: int = 8) -> float:
    return compare_to_reference(model, ids, None, ratios, seed, batch_size).nll
