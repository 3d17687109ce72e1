"""Dream (Dream-org/Dream-v0-*-7B) with the official checkpoint's module tree (Qwen2-style):

    model.embed_tokens
    model.layers.{i}.input_layernorm
    model.layers.{i}.self_attn.{q,k,v}_proj     (with bias)
    model.layers.{i}.self_attn.o_proj
    model.layers.{i}.post_attention_layernorm
    model.layers.{i}.mlp.{gate,up,down}_proj
    model.norm
    lm_head

Dream's raw logits are shifted (raw position i scores token i+1); `DiffusionLM.forward` re-aligns them.
"""
from __future__ import annotations

from torch import nn

from faircalib.models.base import DecoderBlock, DiffusionLM
from faircalib.models.config import DLLMConfig
from faircalib.models.layers import RMSNorm


class DreamBlock(DecoderBlock):
    ROLE_PATHS = {"attn_norm": "input_layernorm", "q": "self_attn.q_proj", "k": "self_attn.k_proj",
                  "v": "self_attn.v_proj", "o": "self_attn.o_proj", "mlp_norm": "post_attention_layernorm",
                  "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"}

    def __init__(self, cfg: DLLMConfig):
        super().__init__(cfg)
        d, hd = cfg.d_model, cfg.head_dim
        self.input_layernorm = RMSNorm(d, cfg.rms_norm_eps)
        self.self_attn = nn.Module()
        self.self_attn.q_proj = nn.Linear(d, cfg.n_heads * hd, bias=True)
        self.self_attn.k_proj = nn.Linear(d, cfg.n_kv_heads * hd, bias=True)
        self.self_attn.v_proj = nn.Linear(d, cfg.n_kv_heads * hd, bias=True)
        self.self_attn.o_proj = nn.Linear(cfg.n_heads * hd, d, bias=False)
        self.post_attention_layernorm = RMSNorm(d, cfg.rms_norm_eps)
        self.mlp = nn.Module()
        self.mlp.gate_proj = nn.Linear(d, cfg.d_ff, bias=False)
        self.mlp.up_proj = nn.Linear(d, cfg.d_ff, bias=False)
        self.mlp.down_proj = nn.Linear(cfg.d_ff, d, bias=False)


class DreamModel(DiffusionLM):
    arch = "dream"
    default_policy = "entropy"

    def __init__(self, config: DLLMConfig):
        super().__init__(config)
        self.model = nn.Module()
        self.model.embed_tokens = nn.Embedding(config.vocab_size, config.d_model)
        self.model.layers = nn.ModuleList(DreamBlock(config) for _ in range(config.n_layers))
        self.model.norm = RMSNorm(config.d_model, config.rms_norm_eps)
        if not config.tie_word_embeddings:
            self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)

    @property
    def embed_tokens(self) -> nn.Embedding:
        return self.model.embed_tokens

    @property
    def blocks(self) -> nn.ModuleList:
        return self.model.layers

    @property
    def final_norm(self) -> nn.Module:
        return self.model.norm

    @property
    def lm_head(self) -> nn.Module | None:
        return self._modules.get("lm_head")
