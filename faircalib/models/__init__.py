"""Native LLaDA and Dream implementations, loading, and the adapter interface.

    from faircalib.models import load_dllm
    m = load_dllm("zoo:tiny-llada")           # or a local HF-format directory
    logits = m.model(input_ids)              # (B, T, V), position-aligned for every architecture
"""
from faircalib.models.adapter import DLLMAdapter
from faircalib.models.base import ACT_POINTS, LINEAR_ROLES, DecoderBlock, DiffusionLM
from faircalib.models.config import DLLMConfig, parse_config, read_config
from faircalib.models.defaults import FAMILY_DECODING, DecodingDefaults, model_decoding
from faircalib.models.dream import DreamModel
from faircalib.models.hashing import state_dict_hash, tensor_hash, weights_hash
from faircalib.models.io import build_model, load_model_dir, load_tokenizer, save_model_dir
from faircalib.models.llada import LLaDAModel
from faircalib.models.loader import LoadedDLLM, inspect_model, load_dllm, require_dllm, resolve_source
from faircalib.models.zoo import decoding_defaults, model_card, zoo_names, zoo_path

__all__ = [
    "ACT_POINTS", "FAMILY_DECODING", "LINEAR_ROLES", "decoding_defaults", "DecodingDefaults", "DLLMAdapter", "DLLMConfig", "DecoderBlock", "DiffusionLM", "DreamModel",
    "LLaDAModel", "LoadedDLLM", "build_model", "inspect_model", "load_dllm", "load_model_dir", "load_tokenizer",
    "model_card", "model_decoding", "parse_config", "read_config", "require_dllm", "resolve_source", "save_model_dir",
    "state_dict_hash", "tensor_hash", "weights_hash", "zoo_names",
    "zoo_path",
]
from faircalib.models.tiny import tiny_config, tiny_model  # noqa: E402

from faircalib.models.synth import synth_config, synth_tokenizer, synthetic_model, write_synthetic  # noqa: E402

__all__ += ["synth_config", "synth_tokenizer", "synthetic_model", "tiny_config", "tiny_model", "write_synthetic"]
