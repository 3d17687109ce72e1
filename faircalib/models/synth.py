"""Synthetic real-shape checkpoints: random weights in the exact layout of LLaDA-8B-Instruct or
Dream-v0-Instruct-7B (official `config.json` fields, special token ids, tensor names, bf16 sharded
safetensors + `model.safetensors.index.json`, a tokenizer with the real vocabulary size), with any
number of layers. They load through the normal loader (`faircalib.models.load_dllm`) and let every
stage run at full width without downloading 16 GB.

    write_synthetic("llada-8b", layers=2, out="synth/llada2")     # d 4096, d_ff 12288, vocab 126464
    write_synthetic("dream-7b", layers=4, out="synth/dream4")     # d 3584, d_ff 18944, GQA 28/4, vocab 152064

Weights are drawn tensor by tensor (normal(0, init_std) for matrices, ones for norms, small normal
biases) from a generator seeded by (seed, tensor name), so the values do not depend on the shard size,
and only one shard is in memory at a time. The tokenizer is a byte-level BPE with a few thousand merges
trained on the built-in text, padded with unreachable `<|reserved_i|>` entries to the model's vocabulary
size, and the family's special tokens at their official ids (LLaDA: <|startoftext|> 126080,
<|endoftext|> 126081, <|mdm_mask|> 126336, header/eot 126346-126348; Dream: <|endoftext|> 151643,
<|im_start|>/<|im_end|> 151644/151645, <|beginoftext|> 151665, <|mask|> 151666).

Module boundary: writes directories; reading them is faircalib.models.io.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from faircalib.errors import ConfigError
from faircalib.models.config import parse_config

# config.json of GSAI-ML/LLaDA-8B-Instruct (every field as published; n_layers is overridden)
LLADA_8B_CONFIG: dict[str, Any] = {
    "activation_type": "silu", "alibi": False, "alibi_bias_max": 8.0, "architectures": ["LLaDAModelLM"],
    "attention_dropout": 0.0, "attention_layer_norm": False, "attention_layer_norm_with_affine": True,
    "auto_map": {"AutoConfig": "configuration_llada.LLaDAConfig",
                 "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM",
                 "AutoModel": "modeling_llada.LLaDAModelLM"},
    "bias_for_layer_norm": False, "block_group_size": 1, "block_type": "llama", "d_model": 4096,
    "embedding_dropout": 0.0, "embedding_size": 126464, "eos_token_id": 126081, "flash_attention": False,
    "include_bias": False, "include_qkv_bias": False, "init_cutoff_factor": None, "init_device": "meta",
    "init_fn": "mitchell", "init_std": 0.02, "input_emb_norm": False, "layer_norm_type": "rms",
    "layer_norm_with_affine": True, "mask_token_id": 126336, "max_sequence_length": 4096,
    "mlp_hidden_size": 12288, "mlp_ratio": 4, "model_type": "llada", "multi_query_attention": None,
    "n_heads": 32, "n_kv_heads": 32, "n_layers": 32, "pad_token_id": 126081, "precision": "amp_bf16",
    "residual_dropout": 0.0, "rms_norm_eps": 1e-05, "rope": True, "rope_full_precision": True,
    "rope_theta": 500000.0, "scale_logits": False, "transformers_version": "4.46.3", "use_cache": False,
    "vocab_size": 126464, "weight_tying": False,
}
# config.json of Dream-org/Dream-v0-Instruct-7B (num_hidden_layers is overridden)
DREAM_7B_CONFIG: dict[str, Any] = {
    "architectures": ["DreamModel"], "attention_dropout": 0.0,
    "auto_map": {"AutoConfig": "configuration_dream.DreamConfig", "AutoModel": "modeling_dream.DreamModel"},
    "bos_token_id": 151643, "eos_token_id": 151643, "hidden_act": "silu", "hidden_size": 3584,
    "initializer_range": 0.02, "intermediate_size": 18944, "mask_token_id": 151666,
    "max_position_embeddings": 131072, "max_window_layers": 28, "model_type": "Dream",
    "num_attention_heads": 28, "num_hidden_layers": 28, "num_key_value_heads": 4, "pad_token_id": 151643,
    "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 1000000.0, "sliding_window": 131072,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16", "transformers_version": "4.46.2",
    "use_cache": True, "use_sliding_window": False, "vocab_size": 152064,
}
# generation_config.json as shipped (Dream's; LLaDA's only names its special tokens)
GENERATION_CONFIGS: dict[str, dict[str, Any]] = {
    "llada-8b": {"_from_model_config": True, "bos_token_id": 126080, "eos_token_id": 126081,
                 "pad_token_id": 126081, "transformers_version": "4.46.3"},
    "dream-7b": {"_from_model_config": True, "alg": "origin", "alg_temp": None, "bos_token_id": 151643,
                 "eos_token_id": 151643, "eps": 0.001, "mask_token_id": None, "output_history": False,
                 "pad_token_id": 151643, "steps": 512, "temperature": 0.0, "top_k": None, "top_p": None,
                 "transformers_version": "4.46.2"},
}
# official special tokens: id -> text, and the tokenizer roles they play
SPECIAL_TOKENS: dict[str, dict[int, str]] = {
    "llada-8b": {126080: "<|startoftext|>", 126081: "<|endoftext|>", 126336: "<|mdm_mask|>",
                 126346: "<|start_header_id|>", 126347: "<|end_header_id|>", 126348: "<|eot_id|>"},
    "dream-7b": {151643: "<|endoftext|>", 151644: "<|im_start|>", 151645: "<|im_end|>",
                 151665: "<|beginoftext|>", 151666: "<|mask|>"},
}
TOKEN_ROLES: dict[str, dict[str, int]] = {
    "llada-8b": {"bos_token": 126080, "eos_token": 126081, "pad_token": 126081, "mask_token": 126336},
    "dream-7b": {"bos_token": 151665, "eos_token": 151643, "pad_token": 151643, "mask_token": 151666},
}
SHAPES: dict[str, tuple[dict[str, Any], str]] = {"llada-8b": (LLADA_8B_CONFIG, "n_layers"),
                                                  "dream-7b": (DREAM_7B_CONFIG, "num_hidden_layers")}
LIKE = tuple(SHAPES)
BPE_MERGES_VOCAB = 4096  # byte-level BPE part of the tokenizer (the rest are reserved entries)
INIT_STD = 0.02
DEFAULT_SHARD_BYTES = 2 * 2 ** 30  # the official checkpoints' shards are 2-5 GB
_CHUNK = 1 << 24  # elements generated at a time (bounds the float32 scratch to 64 MB)


def _check_like(like: str) -> str:
    if like not in SHAPES:
        raise ConfigError(f"--like {like!r} is unknown; allowed: {', '.join(LIKE)}")
    return like


def synth_config(like: str, layers: int, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The official config.json of `like` with `layers` decoder layers (every other field as published).
    `overrides` changes official fields (tests use it to shrink the width; the rehearsal never does)."""
    cfg, key = SHAPES[_check_like(like)]
    if not isinstance(layers, int) or isinstance(layers, bool) or layers < 1:
        raise ConfigError(f"--layers {layers!r} must be a positive integer (the official model has {cfg[key]})")
    out = json.loads(json.dumps(cfg))
    unknown = sorted(set(overrides or {}) - set(out))
    if unknown:
        raise ConfigError(f"synthetic {like}: override field(s) {unknown} are not in the official config.json")
    out.update(overrides or {})
    out[key] = layers
    if like == "dream-7b":
        out["max_window_layers"] = layers
    return out


def synth_tokenizer(like: str, vocab_size: int | None = None):
    """A byte-level BPE `PreTrainedTokenizerFast` with exactly the model's vocabulary size and the family's
    special tokens at their official ids (see the module docstring)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from faircalib.data import iter_documents

    like = _check_like(like)
    cfg, _ = SHAPES[like]
    V = vocab_size or int(cfg.get("embedding_size") or cfg["vocab_size"])
    special = SPECIAL_TOKENS[like]
    base = Tokenizer(models.BPE())
    base.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    trainer = trainers.BpeTrainer(vocab_size=BPE_MERGES_VOCAB, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    base.train_from_iterator(iter_documents("builtin:mix:train"), trainer)
    model = json.loads(base.to_str())["model"]
    vocab: dict[str, int] = dict(model["vocab"])  # ids 0 .. BPE_MERGES_VOCAB-1
    if max(vocab.values()) >= min(special):
        raise ConfigError(f"internal: BPE part ({len(vocab)}) overlaps the special ids of {like}")
    taken = set(vocab.values())
    for i in range(V):
        if i in special:
            vocab[special[i]] = i
        elif i not in taken:
            vocab[f"<|reserved_{i}|>"] = i
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    roles = {role: special[i] for role, i in TOKEN_ROLES[like].items()}
    extra = [t for i, t in sorted(special.items()) if t not in roles.values()]
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=int(cfg.get("max_sequence_length") or
                                                                              cfg.get("max_position_embeddings")),
                                   clean_up_tokenization_spaces=False, **roles)
    fast.add_special_tokens({"additional_special_tokens": extra})  # strings already in the vocab keep their ids
    if len(fast) != V:
        raise ConfigError(f"internal: synthetic tokenizer has {len(fast)} tokens, expected {V}")
    return fast


def _tensor_seed(seed: int, name: str) -> int:
    return int(hashlib.sha256(f"faircalib-synth:{seed}:{name}".encode()).hexdigest()[:15], 16)


def synth_tensor(name: str, shape: tuple[int, ...], seed: int, dtype: torch.dtype = torch.bfloat16,
                 std: float = INIT_STD) -> torch.Tensor:
    """One tensor: ones for norm weights, normal(0, std/4) for biases, normal(0, std) otherwise; drawn in
    chunks of rows so the float32 scratch stays small."""
    if len(shape) == 1 and not name.endswith("bias"):
        return torch.ones(shape, dtype=dtype)
    g = torch.Generator().manual_seed(_tensor_seed(seed, name))
    scale = std / 4 if name.endswith("bias") else std
    out = torch.empty(shape, dtype=dtype)
    flat = out.view(-1)
    for i in range(0, flat.numel(), _CHUNK):
        n = min(_CHUNK, flat.numel() - i)
        flat[i:i + n] = (torch.randn(n, generator=g) * scale).to(dtype)
    return out


def write_synthetic(like: str, layers: int, out: str | Path, *, seed: int = 0, dtype: torch.dtype = torch.bfloat16,
                    max_shard_bytes: int = DEFAULT_SHARD_BYTES, tokenizer: bool = True,
                    overrides: dict[str, Any] | None = None) -> Path:
    """Write a synthetic `like` checkpoint with `layers` layers to `out` (see the module docstring).
    Returns the directory. Always sharded with an index (one shard when everything fits in one).
    `overrides`: official config fields to change (tests only, see `synth_config`)."""
    from safetensors.torch import save_file

    from faircalib.models.io import INDEX_NAME, build_model

    like = _check_like(like)
    official = synth_config(like, layers, overrides)
    cfg = parse_config(official, where=f"synthetic {like}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(official, indent=2) + "\n")
    (out / "generation_config.json").write_text(json.dumps(GENERATION_CONFIGS[like], indent=2) + "\n")
    shapes = {k: tuple(v.shape) for k, v in build_model(cfg, device="meta").state_dict().items()}
    elem = torch.empty(0, dtype=dtype).element_size()
    groups: list[list[str]] = [[]]
    size = 0
    for name, shape in shapes.items():  # official (module-tree) order
        nbytes = elem * int(torch.Size(shape).numel())
        if groups[-1] and size + nbytes > max_shard_bytes:
            groups.append([])
            size = 0
        groups[-1].append(name)
        size += nbytes
    n = len(groups)
    weight_map: dict[str, str] = {}
    total = 0
    for i, names in enumerate(groups, 1):
        fname = f"model-{i:05d}-of-{n:05d}.safetensors"
        shard = {k: synth_tensor(k, shapes[k], seed, dtype) for k in names}
        total += sum(t.numel() * t.element_size() for t in shard.values())
        save_file(shard, str(out / fname), metadata={"format": "pt"})
        weight_map.update({k: fname for k in names})
        del shard
    (out / INDEX_NAME).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map},
                                             indent=2) + "\n")
    if tokenizer:
        synth_tokenizer(like, cfg.vocab_size).save_pretrained(str(out))
    (out / "synthetic.json").write_text(json.dumps({
        "like": like, "layers": layers, "seed": seed, "dtype": str(dtype).removeprefix("torch."),
        "init_std": INIT_STD, "shards": n, "total_bytes": total, "overrides": dict(overrides or {}),
        "note": "random weights (faircalib models synth): real shapes and names, meaningless outputs",
    }, indent=2) + "\n")
    return out


def synthetic_model(like: str, layers: int, *, device: torch.device | str = "cpu",
                    dtype: torch.dtype = torch.bfloat16, seed: int = 0, overrides: dict[str, Any] | None = None):
    """The same random model as `write_synthetic` would write, built directly in memory on `device`
    (no files; for benchmarks on a fresh GPU machine). Weights are drawn on the device, so values differ
    from the on-disk version; shapes, names, config and special ids are identical."""
    from faircalib.models.io import build_model

    cfg = parse_config(synth_config(like, layers, overrides), where=f"synthetic {like}")
    model = build_model(cfg, device="meta")
    state = {}
    dev = torch.device(device)
    for name, t in model.state_dict().items():
        if t.ndim == 1 and not name.endswith("bias"):
            state[name] = torch.ones(t.shape, dtype=dtype, device=dev)
            continue
        g = torch.Generator(device=dev).manual_seed(_tensor_seed(seed, name))
        scale = INIT_STD / 4 if name.endswith("bias") else INIT_STD
        state[name] = (torch.randn(t.shape, generator=g, device=dev, dtype=torch.float32) * scale).to(dtype) \
            if t.numel() <= _CHUNK else _chunked_randn(t.shape, g, dev, dtype, scale)
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


def _chunked_randn(shape, g: torch.Generator, device: torch.device, dtype: torch.dtype, scale: float) -> torch.Tensor:
    out = torch.empty(shape, dtype=dtype, device=device)
    flat = out.view(-1)
    for i in range(0, flat.numel(), _CHUNK):
        n = min(_CHUNK, flat.numel() - i)
        flat[i:i + n] = (torch.randn(n, generator=g, device=device) * scale).to(dtype)
    return out
