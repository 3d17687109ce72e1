"""Prompt batching: a list of 1-D id sequences of different lengths, or an already padded (B, P) tensor
with its attention mask, -> left-padded (B, P) ids + (B, P) attention mask.

Left padding keeps every row's answer window at the same positions P..P+L-1; the models' RoPE is
relative and padded keys are masked out, so left padding is exact.

Module boundary: input normalisation only.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from faircalib.errors import ConfigError


def model_device(model: Any) -> torch.device:
    dev = getattr(model, "device", None)
    if isinstance(dev, torch.device):
        return dev
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def model_pad_id(model: Any) -> int:
    cfg = getattr(model, "config", None)
    pad = getattr(cfg, "pad_token_id", None)
    return int(pad) if pad is not None else 0


def batch_prompts(prompts: Any, pad_id: int, mask_id: int, attention_mask: torch.Tensor | None = None,
                  device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """-> (ids (B, P) int64, attention_mask (B, P) int64), left-padded with pad_id."""
    if isinstance(prompts, torch.Tensor) and prompts.ndim == 2:
        ids = prompts.long()
        if attention_mask is None:
            mask = torch.ones_like(ids)
        else:
            if attention_mask.shape != ids.shape:
                raise ConfigError(f"attention_mask shape {tuple(attention_mask.shape)} does not match prompts "
                                  f"shape {tuple(ids.shape)}")
            mask = attention_mask.long()
            if bool(((mask != 0) & (mask != 1)).any()):
                raise ConfigError("attention_mask must contain only 0 and 1")
            # left padding: once a row has a real token, every later position is real
            if bool((mask[:, 1:] < mask[:, :-1]).any()):
                raise ConfigError("attention_mask must be left-padded (pads before the prompt, the answer window "
                                  "comes right after the last prompt token)")
            ids = ids.masked_fill(mask == 0, pad_id)
    else:
        if attention_mask is not None:
            raise ConfigError("attention_mask is only accepted with a padded (B, P) prompts tensor")
        if isinstance(prompts, torch.Tensor) and prompts.ndim == 1:
            prompts = [prompts]
        if not isinstance(prompts, Sequence) or len(prompts) == 0:
            raise ConfigError("prompts must be a non-empty list of 1-D token id sequences or a (B, P) tensor")
        rows = [torch.as_tensor(p, dtype=torch.long).view(-1) for p in prompts]
        P = max(r.numel() for r in rows)
        ids = torch.full((len(rows), P), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), P), dtype=torch.long)
        for b, r in enumerate(rows):
            if r.numel():
                ids[b, P - r.numel():] = r
                mask[b, P - r.numel():] = 1
    real = ids[mask.bool()]
    if bool((real == mask_id).any()):
        raise ConfigError(f"a prompt contains the mask token id {mask_id}; prompts must be fully observed")
    return ids.to(device), mask.to(device)
