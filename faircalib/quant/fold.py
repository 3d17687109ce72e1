"""Folding a calibrated block into deployment modules (docs/method.md §5: "transforms and scales are folded
into the weights (float64) so deployment needs only the online activation transform + quantize + int
GEMM").

For each quantized activation point: the learned transform becomes a `KroneckerOnline` (diag, P1, P2 as
float32 buffers), each linear's weight is mapped in float64, W_f = (W ⊘ d)(P1 ⊗ P2)^-T, and quantized per
output channel with its learned clipping into a `QuantLinear` that also carries the point's learned
activation clipping. Fixed transforms (QuaRot's online rotation) stay as they are. Plain FP linears
(no fake modules installed) are quantized round-to-nearest, i.e. `fold_block` on an untouched block is RTN.
`quantize_head_and_embed` stores the LM head / embedding as int8 rows by default (QuantConfig.head_bits /
embed_bits; the head weight-only) or at W4A4 / W4 (quantize_head / quantize_embed).
"""
from __future__ import annotations

import torch
from torch import nn

from faircalib.errors import ConfigError
from faircalib.models.base import ACT_POINTS, DecoderBlock, DiffusionLM
from faircalib.models.replace import replace_module
from faircalib.quant.bits import FP_BITS
from faircalib.quant.config import QuantConfig
from faircalib.quant.fake import ActPoint, FakeQuantLinear
from faircalib.quant.runtime import KroneckerOnline, QuantEmbedding, QuantLinear
from faircalib.quant.transforms import KroneckerTransform


def folded_weight(lin: nn.Module, transform: KroneckerTransform | None) -> torch.Tensor:
    """The weight a deployed linear multiplies with the transformed activation, float64 (N, K)."""
    w = lin.weight.detach().double()
    return w if transform is None else transform.transform_weight(w, torch.float64).detach()


@torch.no_grad()
def fold_block(block: DecoderBlock, qcfg: QuantConfig) -> None:
    """Replace the block's fake-quant (or FP) modules at `qcfg.points` by runtime modules, in place."""
    for point in qcfg.points:
        roles = ACT_POINTS[point]
        ap = block.act_transforms[point] if point in block.act_transforms else None  # noqa: SIM401
        if isinstance(ap, ActPoint):
            transform, act_clip = ap.transform, float(ap.clip())
        else:  # untouched point: a fixed transform (or none), clip 1
            transform, act_clip = ap, 1.0
        learned = transform if isinstance(transform, KroneckerTransform) else None
        for role in roles:
            lin = block.role(role)
            if isinstance(lin, QuantLinear):
                continue
            w_clip = lin.clip().reshape(-1).double() if isinstance(lin, FakeQuantLinear) and \
                lin.clip_logit is not None else 1.0
            w = folded_weight(lin, learned)
            if qcfg.w_bits >= FP_BITS:  # quantization off (tests of the transform path)
                new = nn.Linear(lin.in_features, lin.out_features, bias=lin.bias is not None,
                                device=w.device, dtype=lin.weight.dtype)
                new.weight.copy_(w.to(lin.weight.dtype))
                if lin.bias is not None:
                    new.bias.copy_(lin.bias)
            else:
                new = QuantLinear.from_float(w, lin.bias, qcfg.w_bits, qcfg.a_bits, w_clip, act_clip)
            block.set_role(role, new)
        if learned is not None:
            block.act_transforms[point] = KroneckerOnline.from_tensors(learned.diag, learned.p1, learned.p2)
        elif transform is not None:
            block.act_transforms[point] = transform
        elif point in block.act_transforms:
            del block.act_transforms[point]


@torch.no_grad()
def quantize_head_and_embed(model: DiffusionLM, qcfg: QuantConfig) -> str:
    """RTN for the LM head and the embedding per `qcfg` (int8 per row by default; see QuantConfig.head_bits).
    Returns what was done, for the quantization record. A tied head/embedding stays FP unless the
    all-quantized setting (quantize_head / quantize_embed) is asked for, which it does not support."""
    head_bits, embed_bits = qcfg.head_weight_bits, qcfg.embed_weight_bits
    if head_bits >= FP_BITS and embed_bits >= FP_BITS:
        return "fp"
    if model.lm_head is None:
        if qcfg.quantize_head or qcfg.quantize_embed:
            raise ConfigError("quantize_head: not supported with tied word embeddings; keep the head and embedding "
                              "FP (quantize_head=False, quantize_embed=False)", field="quantize_head")
        return "fp (tied embedding and head)"
    done = []
    if head_bits < FP_BITS and not isinstance(model.lm_head, QuantLinear):
        head = model.lm_head
        a_bits = qcfg.a_bits if qcfg.quantize_head else FP_BITS  # default: weight-only
        replace_module(model, head, QuantLinear.from_float(head.weight, head.bias, head_bits, a_bits))
        done.append(f"head w{head_bits}a{a_bits if a_bits < FP_BITS else 16}")
    if embed_bits < FP_BITS and not isinstance(model.embed_tokens, QuantEmbedding):
        emb = model.embed_tokens
        replace_module(model, emb, QuantEmbedding.from_float(emb.weight, embed_bits))
        done.append(f"embedding w{embed_bits}")
    return ", ".join(done) or "fp"
