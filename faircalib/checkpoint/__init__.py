"""Quantized checkpoints: a self-describing directory (packed integer weights, scales, folded online
transforms, FP tensors, official config + tokenizer, quant_config.json, sha256 manifest) and the loader
that rebuilds a runnable model from it; plus `checkpoint_bytes`, the size model from shapes alone."""
from faircalib.checkpoint.io import (
                                     FORMAT,
                                     MANIFEST,
                                     QUANT_CONFIG,
                                     load_quantized,
                                     save_quantized,
                                     verify_manifest,
)
from faircalib.checkpoint.size import checkpoint_bytes

__all__ = ["FORMAT", "MANIFEST", "QUANT_CONFIG", "checkpoint_bytes", "load_quantized", "save_quantized",
           "verify_manifest"]
