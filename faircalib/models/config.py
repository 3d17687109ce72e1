"""One canonical architecture config for every supported dLLM, parsed from (and written back to)
each family's official `config.json` fields.

LLaDA (`model_type: llada`, OLMo-style field names) and Dream (`model_type: Dream`, Qwen2-style
names) are both pre-norm RMSNorm / RoPE / SwiGLU / GQA transformers with bidirectional attention;
they differ in parameter names, q/k/v bias, and Dream's shifted logits. `DLLMConfig` holds what the
shared math needs; `raw` keeps the original JSON so a saved directory round-trips unchanged.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from faircalib.errors import ModelLoadError

SUPPORTED_ARCHS = ("llada", "dream")


@dataclass(frozen=True)
class DLLMConfig:
    arch: str  # "llada" | "dream"
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_ff: int
    vocab_size: int  # rows of the embedding / LM head (LLaDA: embedding_size)
    mask_token_id: int
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    qkv_bias: bool = False
    out_bias: bool = False  # bias on o/gate/up/down (LLaDA include_bias)
    tie_word_embeddings: bool = False
    pad_token_id: int | None = None
    eos_token_id: int | None = None
    max_seq_len: int = 4096
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.arch not in SUPPORTED_ARCHS:
            raise ModelLoadError(f"unknown architecture {self.arch!r}; supported: {', '.join(SUPPORTED_ARCHS)}")
        if self.d_model % self.n_heads:
            raise ModelLoadError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ModelLoadError(f"n_heads={self.n_heads} is not divisible by n_kv_heads={self.n_kv_heads}")
        if self.head_dim % 2:
            raise ModelLoadError(f"head_dim={self.head_dim} must be even for RoPE")
        if not 0 <= self.mask_token_id < self.vocab_size:
            raise ModelLoadError(f"mask_token_id={self.mask_token_id} is outside the vocabulary (size {self.vocab_size})")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def logits_shifted(self) -> bool:
        """Dream's raw logits at position i score token i+1."""
        return self.arch == "dream"

    # ---------------------------------------------------------------- official JSON
    def to_official(self) -> dict[str, Any]:
        """The family's own config.json fields (original extras from `raw` preserved)."""
        out = dict(self.raw)
        if self.arch == "llada":
            out.update(
                model_type="llada", architectures=["LLaDAModelLM"], d_model=self.d_model,
                n_layers=self.n_layers, n_heads=self.n_heads, n_kv_heads=self.n_kv_heads,
                mlp_hidden_size=self.d_ff, vocab_size=out.get("vocab_size", self.vocab_size),
                embedding_size=self.vocab_size, rope_theta=self.rope_theta, rms_norm_eps=self.rms_norm_eps,
                mask_token_id=self.mask_token_id, include_bias=self.out_bias,
                include_qkv_bias=self.qkv_bias, weight_tying=self.tie_word_embeddings,
                max_sequence_length=self.max_seq_len, activation_type="silu", block_type="llama",
                layer_norm_type="rms", rope=True, alibi=False,
            )
            out.setdefault("pad_token_id", self.pad_token_id)
            out.setdefault("eos_token_id", self.eos_token_id)
        else:
            out.update(
                model_type="Dream", architectures=["DreamModel"], hidden_size=self.d_model,
                num_hidden_layers=self.n_layers, num_attention_heads=self.n_heads,
                num_key_value_heads=self.n_kv_heads, intermediate_size=self.d_ff, vocab_size=self.vocab_size,
                rope_theta=self.rope_theta, rms_norm_eps=self.rms_norm_eps, mask_token_id=self.mask_token_id,
                pad_token_id=self.pad_token_id, eos_token_id=self.eos_token_id,
                tie_word_embeddings=self.tie_word_embeddings, max_position_embeddings=self.max_seq_len,
                hidden_act="silu",
            )
        return out

    def save(self, directory: str | Path) -> None:
        Path(directory, "config.json").write_text(json.dumps(self.to_official(), indent=2) + "\n")


# -------------------------------------------------------------------- parsing
def _need(cfg: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in cfg or cfg[key] is None:
        raise ModelLoadError(f"{where}: config.json has no {key!r}; add it (see the model family's official config)")
    return cfg[key]


def _reject(cfg: Mapping[str, Any], where: str, **unsupported: Any) -> None:
    """Refuse config features the native implementation does not have, instead of computing wrong logits."""
    for key, ok in unsupported.items():
        if key in cfg and cfg[key] is not None and not ok(cfg[key]):
            raise ModelLoadError(f"{where}: unsupported {key}={cfg[key]!r}; faircalib implements the official "
                                 f"LLaDA/Dream variants only")


def detect_arch(cfg: Mapping[str, Any], where: str) -> str:
    model_type = str(cfg.get("model_type", "")).lower()
    archs = [str(a) for a in cfg.get("architectures") or []]
    if model_type == "llada" or any(a.startswith("LLaDA") for a in archs):
        return "llada"
    if model_type == "dream" or any(a.startswith("Dream") for a in archs):
        return "dream"
    found = model_type or (archs[0] if archs else "nothing")
    raise ModelLoadError(f"{where}: unknown model_type/architecture {found!r}; supported: "
                         f"llada (LLaDAModelLM), Dream (DreamModel)")


def parse_config(cfg: Mapping[str, Any], where: str = "config.json") -> DLLMConfig:
    arch = detect_arch(cfg, where)
    if arch == "llada":
        _reject(cfg, where,
                alibi=lambda v: not v, block_type=lambda v: v == "llama",
                activation_type=lambda v: v in ("silu", "swiglu"), layer_norm_type=lambda v: v == "rms",
                attention_layer_norm=lambda v: not v, input_emb_norm=lambda v: not v,
                scale_logits=lambda v: not v, rope=lambda v: bool(v),
                layer_norm_with_affine=lambda v: bool(v), multi_query_attention=lambda v: not v)
        n_heads = int(_need(cfg, "n_heads", where))
        d_model = int(_need(cfg, "d_model", where))
        d_ff = cfg.get("mlp_hidden_size") or int(cfg.get("mlp_ratio", 4) * d_model)
        include_bias = bool(cfg.get("include_bias", False))
        return DLLMConfig(
            arch="llada", d_model=d_model, n_layers=int(_need(cfg, "n_layers", where)), n_heads=n_heads,
            n_kv_heads=int(cfg.get("n_kv_heads") or n_heads), d_ff=int(d_ff),
            vocab_size=int(cfg.get("embedding_size") or _need(cfg, "vocab_size", where)),
            mask_token_id=int(_need(cfg, "mask_token_id", where)),
            rope_theta=float(cfg.get("rope_theta", 10000.0)), rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-5)),
            qkv_bias=bool(cfg.get("include_qkv_bias", False)) or include_bias, out_bias=include_bias,
            tie_word_embeddings=bool(cfg.get("weight_tying", False)),
            pad_token_id=cfg.get("pad_token_id"), eos_token_id=cfg.get("eos_token_id"),
            max_seq_len=int(cfg.get("max_sequence_length", 4096)), raw=dict(cfg),
        )
    _reject(cfg, where, rope_scaling=lambda v: not v, hidden_act=lambda v: v == "silu",
            use_sliding_window=lambda v: not v)
    n_heads = int(_need(cfg, "num_attention_heads", where))
    return DLLMConfig(
        arch="dream", d_model=int(_need(cfg, "hidden_size", where)),
        n_layers=int(_need(cfg, "num_hidden_layers", where)), n_heads=n_heads,
        n_kv_heads=int(cfg.get("num_key_value_heads") or n_heads),
        d_ff=int(_need(cfg, "intermediate_size", where)), vocab_size=int(_need(cfg, "vocab_size", where)),
        mask_token_id=int(_need(cfg, "mask_token_id", where)),
        rope_theta=float(cfg.get("rope_theta", 10000.0)), rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
        qkv_bias=True, out_bias=False, tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        pad_token_id=cfg.get("pad_token_id"), eos_token_id=cfg.get("eos_token_id"),
        max_seq_len=int(cfg.get("max_position_embeddings", 32768)), raw=dict(cfg),
    )


def read_config(directory: str | Path) -> DLLMConfig:
    path = Path(directory) / "config.json"
    if not Path(directory).is_dir():
        raise ModelLoadError(f"model directory {str(directory)!r} does not exist; pass a local Hugging Face-format "
                             f"directory or a zoo name (faircalib zoo list)")
    if not path.is_file():
        raise ModelLoadError(f"{str(directory)!r} has no config.json; a model directory needs config.json and "
                             f"*.safetensors weights")
    try:
        cfg = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ModelLoadError(f"{path}: invalid JSON ({e.msg} at line {e.lineno}); fix or re-download the file") from e
    return parse_config(cfg, where=str(path))
