"""The math shared by every supported dLLM: RMSNorm, rotary embeddings, bidirectional grouped-query
attention, SwiGLU. Written once; architectures differ only in module names (see llada.py, dream.py)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """y = w * x / sqrt(mean(x^2) + eps), statistics in float32 (as both official implementations)."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(dtype)


@dataclass
class BlockContext:
    """Everything a block needs besides its input: rotary tables and the key-padding mask.

    cos, sin: (T, head_dim) float32. key_mask: (B, 1, 1, T) bool, True = attend, or None (no padding).
    """

    cos: torch.Tensor
    sin: torch.Tensor
    key_mask: torch.Tensor | None

    def to(self, device: torch.device | str) -> "BlockContext":
        km = None if self.key_mask is None else self.key_mask.to(device)
        return BlockContext(self.cos.to(device), self.sin.to(device), km)


def rope_tables(seq_len: int, head_dim: int, theta: float, device: torch.device | str = "cpu"):
    """Half-split ("rotate_half") RoPE tables, as LLaDA (OLMo) and Dream (Qwen2) use. Returns (T, hd) x2."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64, device=device) / head_dim))
    pos = torch.arange(seq_len, dtype=torch.float64, device=device)
    freqs = torch.outer(pos, inv_freq)  # (T, hd/2)
    emb = torch.cat([freqs, freqs], dim=-1)  # (T, hd)
    return emb.cos().float(), emb.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (B, H, T, hd); rotation computed in float32, returned in x's dtype."""
    x32 = x.float()
    half = x32.shape[-1] // 2
    rotated = torch.cat([-x32[..., half:], x32[..., :half]], dim=-1)
    return (x32 * cos + rotated * sin).to(x.dtype)


def make_context(seq_len: int, head_dim: int, theta: float, attention_mask: torch.Tensor | None,
                 device: torch.device | str) -> BlockContext:
    """attention_mask: (B, T) with 1 for real tokens (left or right padding both fine: RoPE is relative)."""
    cos, sin = rope_tables(seq_len, head_dim, theta, device)
    key_mask = None
    if attention_mask is not None and not bool(attention_mask.all()):
        key_mask = attention_mask.to(device=device, dtype=torch.bool)[:, None, None, :]  # (B, 1, 1, T)
    return BlockContext(cos, sin, key_mask)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, ctx: BlockContext, n_heads: int,
              n_kv_heads: int) -> torch.Tensor:
    """Bidirectional GQA. q: (B, T, H*hd), k/v: (B, T, Hkv*hd) -> (B, T, H*hd)."""
    B, T, _ = q.shape
    hd = q.shape[-1] // n_heads
    q = q.view(B, T, n_heads, hd).transpose(1, 2)  # (B, H, T, hd)
    k = k.view(B, T, n_kv_heads, hd).transpose(1, 2)  # (B, Hkv, T, hd)
    v = v.view(B, T, n_kv_heads, hd).transpose(1, 2)
    q = apply_rope(q, ctx.cos[:T], ctx.sin[:T])
    k = apply_rope(k, ctx.cos[:T], ctx.sin[:T])
    if n_kv_heads != n_heads:  # kv head j serves query heads j*g .. (j+1)*g-1
        g = n_heads // n_kv_heads
        k = k.repeat_interleave(g, dim=1)  # (B, H, T, hd)
        v = v.repeat_interleave(g, dim=1)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=ctx.key_mask, is_causal=False)  # (B, H, T, hd)
    return out.transpose(1, 2).reshape(B, T, n_heads * hd)


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return F.silu(gate) * up
