"""Architecture-independent model classes.

`DecoderBlock` implements the pre-norm block once; a subclass only declares where each *role*
(q, k, v, o, gate, up, down, attn_norm, mlp_norm) lives in its official module tree (`ROLE_PATHS`), so
state-dict names match the official checkpoints while calibration, probing and diagnostics address
linears by role. `act_transforms` is an (initially empty) ModuleDict of optional online activation
transforms applied at the four linear-input points (`ACT_POINTS`); quantization methods install
transforms there (FlatQuant's x·P, QuaRot's online Hadamard) instead of patching forwards.

`DiffusionLM.forward` returns **position-aligned** logits for every architecture: `logits[:, i]` scores
the token at position i (Dream's raw shifted logits are re-aligned here).
"""
from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from faircalib.models.config import DLLMConfig
from faircalib.models.layers import BlockContext, attention, make_context, swiglu

LINEAR_ROLES = ("q", "k", "v", "o", "gate", "up", "down")
# activation point -> the linears that consume that activation (they share an input transform)
ACT_POINTS: dict[str, tuple[str, ...]] = {"qkv": ("q", "k", "v"), "o": ("o",), "gate_up": ("gate", "up"),
                                          "down": ("down",)}


class DecoderBlock(nn.Module):
    ROLE_PATHS: ClassVar[dict[str, str]]  # role -> dotted path in the official module tree

    def __init__(self, cfg: DLLMConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.n_kv_heads = cfg.n_kv_heads
        self.act_transforms = nn.ModuleDict()  # point -> module; empty = identity (no state-dict entries)

    def role(self, name: str) -> nn.Module:
        return self.get_submodule(self.ROLE_PATHS[name])

    def set_role(self, name: str, module: nn.Module) -> None:
        """Replace the module playing `name` (e.g. a Linear by a quantized linear)."""
        path = self.ROLE_PATHS[name]
        parent, _, attr = path.rpartition(".")
        setattr(self.get_submodule(parent) if parent else self, attr, module)

    def linears(self) -> dict[str, nn.Module]:
        return {r: self.role(r) for r in LINEAR_ROLES}

    def _act(self, point: str, x: torch.Tensor) -> torch.Tensor:
        return self.act_transforms[point](x) if point in self.act_transforms else x

    def forward(self, x: torch.Tensor, ctx: BlockContext) -> torch.Tensor:
        """x: (B, T, D) -> (B, T, D)."""
        h = self._act("qkv", self.role("attn_norm")(x))
        a = attention(self.role("q")(h), self.role("k")(h), self.role("v")(h), ctx, self.n_heads, self.n_kv_heads)
        x = x + self.role("o")(self._act("o", a))
        h = self._act("gate_up", self.role("mlp_norm")(x))
        m = swiglu(self.role("gate")(h), self.role("up")(h))  # (B, T, d_ff)
        return x + self.role("down")(self._act("down", m))


class DiffusionLM(nn.Module):
    """Base class of the native dLLMs. Subclasses build the official module tree and point the
    properties below at it."""

    default_policy: ClassVar[str]
    arch: ClassVar[str]
    fresh_logits: ClassVar[bool] = True  # forward() returns a new logits tensor (decoding may edit it in place)

    def __init__(self, config: DLLMConfig):
        super().__init__()
        self.config = config

    # -- parts (subclasses override) ------------------------------------------------------------
    @property
    def embed_tokens(self) -> nn.Embedding:
        raise NotImplementedError

    @property
    def blocks(self) -> nn.ModuleList:
        raise NotImplementedError

    @property
    def final_norm(self) -> nn.Module:
        raise NotImplementedError

    @property
    def lm_head(self) -> nn.Module | None:
        """None when the head is tied to the embedding."""
        raise NotImplementedError

    # -- conveniences ---------------------------------------------------------------------------
    @property
    def mask_token_id(self) -> int:
        return self.config.mask_token_id

    @property
    def device(self) -> torch.device:
        """Where the model lives (read from the final norm: a quantized embedding's `.weight` would
        dequantize the whole table)."""
        return self.final_norm.weight.device

    @property
    def dtype(self) -> torch.dtype:
        """The floating-point dtype of the FP parts (norms always stay FP)."""
        return self.final_norm.weight.dtype

    def context(self, seq_len: int, attention_mask: torch.Tensor | None = None,
                device: torch.device | str | None = None) -> BlockContext:
        return make_context(seq_len, self.config.head_dim, self.config.rope_theta, attention_mask,
                            device or self.device)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) -> (B, T, D) in the model's dtype (a quantized embedding dequantizes to float32)."""
        return self.embed_tokens(input_ids).to(self.dtype)

    def head(self, h: torch.Tensor) -> torch.Tensor:
        """Final norm + LM head on hidden states. (B, T, D) -> raw logits (B, T, V), float32."""
        h = self.final_norm(h)
        head = self.lm_head
        logits = F.linear(h, self.embed_tokens.weight) if head is None else head(h)
        return logits.float()

    def raw_positions(self, start: int, end: int) -> torch.Tensor:
        """Positions of the raw logits that score tokens start..end-1 (Dream: shifted by one; position 0
        reuses raw position 0, as the official Dream generation code does)."""
        pos = torch.arange(start, end)
        return (pos - 1).clamp(min=0) if self.config.logits_shifted else pos

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                window: tuple[int, int] | None = None) -> torch.Tensor:
        """Position-aligned logits. input_ids: (B, T); attention_mask: (B, T) 1 = real token.

        window=(start, end) computes the head only for tokens start..end-1 -> (B, end-start, V);
        otherwise (B, T, V).
        """
        B, T = input_ids.shape
        ctx = self.context(T, attention_mask)
        h = self.embed(input_ids)
        for block in self.blocks:
            h = block(h, ctx)
        start, end = window if window is not None else (0, T)
        idx = self.raw_positions(start, end).to(h.device)
        return self.head(h.index_select(1, idx))

    @torch.no_grad()
    def init_weights(self, seed: int = 0, std: float = 0.02) -> DiffusionLM:
        """Random init for tests and from-scratch training (normal(0, std), zero bias, unit norms)."""
        g = torch.Generator().manual_seed(seed)
        for name, p in sorted(self.named_parameters()):
            if name.endswith("bias"):
                p.zero_()
            elif p.ndim == 1:
                p.fill_(1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * std)
        return self

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
