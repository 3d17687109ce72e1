"""The small interface through which probing, calibration and diagnostics touch a model, so each is
written once for every architecture: embedding, blocks, final norm + head, block-input capture, and
role-addressed linears (q, k, v, o, gate, up, down) grouped by the activation they consume."""
from __future__ import annotations

import torch
from torch import nn

from faircalib.models.base import ACT_POINTS, LINEAR_ROLES, DecoderBlock, DiffusionLM
from faircalib.models.layers import BlockContext


class DLLMAdapter:
    linear_roles = LINEAR_ROLES
    linear_groups = ACT_POINTS  # activation point -> linears sharing that input

    def __init__(self, model: DiffusionLM):
        self.model = model

    @property
    def blocks(self) -> list[DecoderBlock]:
        return list(self.model.blocks)

    @property
    def n_blocks(self) -> int:
        return len(self.model.blocks)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) -> (B, T, D): the input of block 0."""
        return self.model.embed(input_ids)

    def context(self, seq_len: int, attention_mask: torch.Tensor | None = None,
                device: torch.device | str | None = None) -> BlockContext:
        return self.model.context(seq_len, attention_mask, device)

    def run_block(self, index: int, h: torch.Tensor, ctx: BlockContext) -> torch.Tensor:
        return self.model.blocks[index](h, ctx)

    @property
    def final_norm(self) -> nn.Module:
        return self.model.final_norm

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Final hidden states (B, T, D) -> position-aligned logits (B, T, V)."""
        idx = self.model.raw_positions(0, h.shape[1]).to(h.device)
        return self.model.head(h.index_select(1, idx))

    def block_linears(self, index: int) -> dict[str, nn.Module]:
        return self.model.blocks[index].linears()

    def set_linear(self, index: int, role: str, module: nn.Module) -> None:
        self.model.blocks[index].set_role(role, module)

    def block_norms(self, index: int) -> dict[str, nn.Module]:
        block = self.model.blocks[index]
        return {"attn_norm": block.role("attn_norm"), "mlp_norm": block.role("mlp_norm")}

    @torch.no_grad()
    def capture_block_inputs(self, input_ids: torch.Tensor, block: int = 0,
                             attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Hidden states entering block `block` (0 = embeddings) for a batch: (B, T) -> (B, T, D)."""
        h = self.embed(input_ids)
        ctx = self.context(input_ids.shape[1], attention_mask, h.device)
        for i in range(block):
            h = self.run_block(i, h, ctx)
        return h
