"""Tiny random configurations of each architecture, for tests, benchmarks and smoke runs."""
from __future__ import annotations

from faircalib.models.base import DiffusionLM
from faircalib.models.config import DLLMConfig
from faircalib.models.io import build_model


def tiny_config(arch: str = "llada", **overrides) -> DLLMConfig:
    """d_model 64, 4 heads / 2 kv heads (GQA), 2 layers, vocab 96 with the mask as the last id."""
    fields = dict(arch=arch, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=96, vocab_size=96,
                  mask_token_id=95, rope_theta=10000.0, rms_norm_eps=1e-5, qkv_bias=(arch == "dream"),
                  pad_token_id=0, eos_token_id=1, max_seq_len=512)
    fields.update(overrides)
    return DLLMConfig(**fields)


def tiny_model(arch: str = "llada", seed: int = 0, **overrides) -> DiffusionLM:
    model = build_model(tiny_config(arch, **overrides)).init_weights(seed)
    if model.config.qkv_bias:  # non-zero biases so tests exercise them
        import torch

        g = torch.Generator().manual_seed(seed + 1)
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.data.copy_(torch.randn(p.shape, generator=g) * 0.02)
    return model.eval()
