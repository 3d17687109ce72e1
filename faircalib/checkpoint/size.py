"""Checkpoint size from shapes alone (no weights): what `save_quantized` stores for a config, next to
the bf16 FP model. Used for the paper's compression figure (Table D: ≈3.1-3.2x at 7-8B shapes).

Counted for the quantized model: packed integer weights (N·K·c/8 bytes, c = 4 for <= 4 bits, else 8),
float32 per-channel scales (N·4) and activation clip (4) per quantized linear; online transforms as
float32 (FlatQuant: diag K + P1 n1² + P2 n2² per point; QuaRot: the structured rotation factors +
signs); the LM head and embedding at QuantConfig.head_bits / embed_bits (int8 per row + float32 row
scales by default); every other tensor (norms, biases, unquantized linears; head / embedding at 16
bits) in bf16.
"""
from __future__ import annotations

from typing import Any

from faircalib.kernels.packing import container_bits
from faircalib.models.base import ACT_POINTS
from faircalib.models.config import DLLMConfig
from faircalib.quant.bits import FP_BITS
from faircalib.quant.config import QuantConfig
from faircalib.quant.transforms import balanced_factors

BF16 = 2
F32 = 4


def block_linear_shapes(cfg: DLLMConfig) -> dict[str, tuple[int, int, bool]]:
    """role -> (out_features N, in_features K, has_bias) of one block."""
    d, hd = cfg.d_model, cfg.head_dim
    q, kv = cfg.n_heads * hd, cfg.n_kv_heads * hd
    return {"q": (q, d, cfg.qkv_bias), "k": (kv, d, cfg.qkv_bias), "v": (kv, d, cfg.qkv_bias),
            "o": (d, q, cfg.out_bias), "gate": (cfg.d_ff, d, cfg.out_bias), "up": (cfg.d_ff, d, cfg.out_bias),
            "down": (d, cfg.d_ff, cfg.out_bias)}


def _rotation_bytes(n: int, seed: int) -> int:
    from faircalib.quant.hadamard import structured_orthogonal

    spec = structured_orthogonal(n, seed)
    mats = sum(f.shape[0] ** 2 for f in spec.factors if not isinstance(f, int))
    return (mats + (n if spec.signs is not None else 0)) * F32


def _quant_linear_bytes(n: int, k: int, bits: int, bias: bool) -> int:
    return n * k * container_bits(bits) // 8 + n * F32 + F32 + (n * F32 if bias else 0)


def checkpoint_bytes(cfg: DLLMConfig, qcfg: QuantConfig) -> dict[str, Any]:
    """{fp_bytes (bf16 FP model), quant_bytes, ratio, breakdown} for `cfg` quantized per `qcfg`."""
    shapes = block_linear_shapes(cfg)
    L, d, V = cfg.n_layers, cfg.d_model, cfg.vocab_size
    emb = V * d
    head = 0 if cfg.tie_word_embeddings else V * d + (V if cfg.out_bias else 0)
    norms = (2 * L + 1) * d
    lin_params = L * sum(n * k + (n if b else 0) for n, k, b in shapes.values())
    fp_bytes = (emb + head + norms + lin_params) * BF16

    quantized = set(qcfg.linears) if qcfg.w_bits < FP_BITS else set()
    lin_q = lin_fp = 0
    for role, (n, k, b) in shapes.items():
        if role in quantized:
            lin_q += L * _quant_linear_bytes(n, k, qcfg.w_bits, b)
        else:
            lin_fp += L * (n * k + (n if b else 0)) * BF16
    transforms = 0
    for point in qcfg.points:
        k = shapes[ACT_POINTS[point][0]][1]
        if qcfg.uses_transforms:
            n1, n2 = balanced_factors(k)
            transforms += L * (k + n1 * n1 + n2 * n2) * F32
        elif qcfg.spec.transform == "hadamard" and point in ("o", "down"):
            transforms += L * _rotation_bytes(k, qcfg.effective_rotation_seed)
    eb, hb = qcfg.embed_weight_bits, qcfg.head_weight_bits
    tied = cfg.tie_word_embeddings and not (qcfg.quantize_head or qcfg.quantize_embed)
    emb_b = (_quant_linear_bytes(V, d, eb, False) - F32) if eb < FP_BITS and not tied else emb * BF16
    head_b = 0
    if head:
        head_b = _quant_linear_bytes(V, d, hb, cfg.out_bias) if hb < FP_BITS else head * BF16
    quant_bytes = lin_q + lin_fp + transforms + emb_b + head_b + norms * BF16
    return {"fp_bytes": fp_bytes, "quant_bytes": quant_bytes, "ratio": fp_bytes / quant_bytes,
            "breakdown": {"quantized_linears": lin_q, "fp_linears": lin_fp, "online_transforms": transforms,
                          "embedding": emb_b, "head": head_b, "norms": norms * BF16}}
