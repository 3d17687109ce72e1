"""The LLaDA masked-diffusion objective: what gets masked, and the exact 1/p-weighted normalisation."""
from __future__ import annotations

import math

import torch

from faircalib.training.batches import SFTBatch
from faircalib.training.objective import pretrain_loss, sample_mask_ratios, sft_loss
from faircalib.models import DLLMConfig


class SpyModel(torch.nn.Module):
    """Uniform logits (so CE = log V at every position); records the inputs it was called with."""

    def __init__(self, vocab: int = 50, arch: str = "llada"):
        super().__init__()
        self.config = DLLMConfig(arch=arch, d_model=8, n_layers=1, n_heads=2, n_kv_heads=2, d_ff=8,
                                 vocab_size=vocab, mask_token_id=2)
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.calls = []

    mask_token_id = 2
    device = torch.device("cpu")

    def forward(self, ids, attention_mask=None, window=None):
        self.calls.append((ids.clone(), attention_mask, window))
        start, end = window or (0, ids.shape[1])
        return torch.zeros(ids.shape[0], end - start, self.config.vocab_size) + self.w


def test_mask_ratios_are_stratified_and_bounded():
    g = torch.Generator().manual_seed(0)
    p = sample_mask_ratios(64, 1e-3, g)
    assert p.min() >= 1e-3 and p.max() < 1.0
    t = ((p - 1e-3) / (1 - 1e-3)).sort().values
    assert torch.all((t * 64).floor() == torch.arange(64))  # exactly one draw per stratum [i/64, (i+1)/64)


def test_sft_masks_only_the_answer_window_and_normalises_like_llada():
    B, P, L = 32, 7, 5
    ids = torch.randint(3, 50, (B, P + L))
    att = torch.ones(B, P + L, dtype=torch.long)
    att[:4, :3] = 0  # some left padding
    model = SpyModel()
    out = sft_loss(model, SFTBatch(ids, att, P), mask_id=2, eps=1e-3, gen=torch.Generator().manual_seed(5))
    seen, seen_att, window = model.calls[0]
    masked = seen == 2
    assert window == (P, P + L) and seen_att is att
    assert not masked[:, :P].any() and torch.equal(seen[:, :P], ids[:, :P])  # prompt untouched
    assert masked[:, P:].any() and out.masked_tokens == int(masked.sum())
    # same draws again -> the exact LLaDA SFT value: sum_rows sum_masked (log V / p_row) / L / B
    g = torch.Generator().manual_seed(5)
    p = sample_mask_ratios(B, 1e-3, g)
    expected = sum(float(masked[b].sum()) * math.log(50) / float(p[b]) for b in range(B)) / L / B
    assert abs(float(out.loss.detach()) - expected) < 1e-4 * expected
    assert abs(out.ce_mean - math.log(50)) < 1e-5


def test_unweighted_sft_is_the_mean_ce_over_masked_answer_tokens():
    B, P, L = 16, 5, 6
    ids = torch.randint(3, 50, (B, P + L))
    model = SpyModel()
    model.w.data.fill_(0.0)
    out = sft_loss(model, SFTBatch(ids, torch.ones_like(ids), P), 2, 1e-3, torch.Generator().manual_seed(0),
                   weighting="none")
    masked = model.calls[0][0] == 2
    assert not masked[:, :P].any() and out.masked_tokens == int(masked.sum()) > 0
    assert abs(float(out.loss.detach()) - math.log(50)) < 1e-5  # uniform logits: every masked CE is log V
    # same masks as the LLaDA weighting (same generator stream)
    sft_loss(model, SFTBatch(ids, torch.ones_like(ids), P), 2, 1e-3, torch.Generator().manual_seed(0))
    assert torch.equal(model.calls[1][0], model.calls[0][0])


def test_pretrain_loss_normalises_by_all_tokens_and_masks_at_rate_p():
    B, T = 64, 40
    ids = torch.randint(3, 50, (B, T))
    model = SpyModel()
    out = pretrain_loss(model, ids, mask_id=2, eps=1e-3, gen=torch.Generator().manual_seed(1))
    masked = model.calls[0][0] == 2
    p = sample_mask_ratios(B, 1e-3, torch.Generator().manual_seed(1))
    expected = sum(float(masked[b].sum()) * math.log(50) / float(p[b]) for b in range(B)) / (B * T)
    assert abs(float(out.loss.detach()) - expected) < 1e-4 * expected
    # per-row masking rate follows p (64 rows x 40 tokens: correlation is near 1)
    rate = masked.float().mean(1)
    assert torch.corrcoef(torch.stack([rate, p]))[0, 1] > 0.9
    assert masked[:, 0].any()  # LLaDA may mask position 0


def test_dream_never_masks_position_zero():
    model = SpyModel(arch="dream")
    pretrain_loss(model, torch.randint(3, 50, (256, 8)), mask_id=2, eps=0.5, gen=torch.Generator().manual_seed(2))
    masked = model.calls[0][0] == 2
    assert not masked[:, 0].any() and masked[:, 1:].float().mean() > 0.5
