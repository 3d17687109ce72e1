"""LLaDA (GSAI-ML/LLaDA-8B-*) with the official checkpoint's module tree:

    model.transformer.wte                      token embedding (embedding_size x d_model)
    model.transformer.blocks.{i}.attn_norm     RMSNorm before attention
    model.transformer.blocks.{i}.{q,k,v}_proj  attention projections
    model.transformer.blocks.{i}.attn_out      attention output projection
    model.transformer.blocks.{i}.ff_norm       RMSNorm before the MLP
    model.transformer.blocks.{i}.ff_proj       SwiGLU gate (activated)
    model.transformer.blocks.{i}.up_proj       SwiGLU up
    model.transformer.blocks.{i}.ff_out        MLP down projection
    model.transformer.ln_f                     final RMSNorm
    model.transformer.ff_out                   LM head (absent when weight_tying)

Note `ff_out` names both the block's down projection and the model's head.
"""
from __future__ import annotations

from torch import nn

from faircalib.models.base import DecoderBlock, DiffusionLM
from faircalib.models.config import DLLMConfig
from faircalib.models.layers import RMSNorm


class LLaDABlock(DecoderBlock):
    ROLE_PATHS = {"attn_norm": "attn_norm", "q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "attn_out",
                  "mlp_norm": "ff_norm", "gate": "ff_proj", "up": "up_proj", "down": "ff_out"}

    def __init__(self, cfg: DLLMConfig):
        super().__init__(cfg)
        d, hd = cfg.d_model, cfg.head_dim
        self.attn_norm = RMSNorm(d, cfg.rms_norm_eps)
        self.q_proj = nn.Linear(d, cfg.n_heads * hd, bias=cfg.qkv_bias)
        self.k_proj = nn.Linear(d, cfg.n_kv_heads * hd, bias=cfg.qkv_bias)
        self.v_proj = nn.Linear(d, cfg.n_kv_heads * hd, bias=cfg.qkv_bias)
        self.attn_out = nn.Linear(cfg.n_heads * hd, d, bias=cfg.out_bias)
        self.ff_norm = RMSNorm(d, cfg.rms_norm_eps)
        self.ff_proj = nn.Linear(d, cfg.d_ff, bias=cfg.out_bias)
        self.up_proj = nn.Linear(d, cfg.d_ff, bias=cfg.out_bias)
        self.ff_out = nn.Linear(cfg.d_ff, d, bias=cfg.out_bias)


class LLaDAModel(DiffusionLM):
    arch = "llada"
    default_policy = "low_confidence"

    def __init__(self, config: DLLMConfig):
        super().__init__(config)
        parts = dict(
            wte=nn.Embedding(config.vocab_size, config.d_model),
            blocks=nn.ModuleList(LLaDABlock(config) for _ in range(config.n_layers)),
            ln_f=RMSNorm(config.d_model, config.rms_norm_eps),
        )
        if not config.tie_word_embeddings:
            parts["ff_out"] = nn.Linear(config.d_model, config.vocab_size, bias=config.out_bias)
        self.model = nn.Module()
        self.model.transformer = nn.ModuleDict(parts)

    @property
    def embed_tokens(self) -> nn.Embedding:
        return self.model.transformer["wte"]

    @property
    def blocks(self) -> nn.ModuleList:
        return self.model.transformer["blocks"]

    @property
    def final_norm(self) -> nn.Module:
        return self.model.transformer["ln_f"]

    @property
    def lm_head(self) -> nn.Module | None:
        return self.model.transformer["ff_out"] if "ff_out" in self.model.transformer else None
