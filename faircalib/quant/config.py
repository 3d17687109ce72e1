"""`QuantConfig`: *what* is quantized and how (method, bit widths, which linears, method knobs), as a
frozen, validated settings class (docs/method.md §5). Stage II's training settings are
`faircalib.calibrate.CalibConfig`; the methods and their traits are `faircalib.quant.methods`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from faircalib.configs import Config, check_bool, check_float, check_int, set_field
from faircalib.errors import ConfigError
from faircalib.models.base import ACT_POINTS, LINEAR_ROLES
from faircalib.quant.bits import FP_BITS, SETTINGS, check_bits, parse_setting
from faircalib.quant.methods import MethodSpec, method_spec, quant_methods

__all__ = ["FP_BITS", "SETTINGS", "QuantConfig"]


@dataclass(frozen=True)
class QuantConfig(Config):
    """What to quantize and how.

    method: a quantizing method of faircalib.quant.methods (rtn | quarot | flatquant | qdrop | faircalib).
    w_bits / a_bits: 2..8, or 16 for unquantized (a_bits=16 is A16: weight-only quantization).
    linears: block linear roles to quantize; must be whole activation groups (q,k,v share an input,
      as do gate,up) because they share one input transform.
    head_bits / embed_bits: the LM head and the embedding are stored as per-row int codes + float32 scales
      at these bits (default 8; RTN), the head weight-only (its input activations stay FP); 16 keeps them
      FP. At LLaDA-8B / Dream-7B shapes the FP embedding + head alone are 2.1 GB of a 5.6 GB W4A4
      checkpoint (2.87x smaller than bf16); at int8 the checkpoint is ~3.5x smaller. Tied embeddings stay FP.
    quantize_head / quantize_embed: the paper's all-quantized setting: the head RTN-quantized per output row
      at w_bits with its input per token at a_bits, the embedding at w_bits (overrides head/embed_bits).
    seed: QuaRot's random signs (unless rotation_seed), QDrop's drops, the block training order.
    smooth_alpha: SmoothQuant exponent of the diagonal-scale init max|W|^(1-a) / max|x|^a.
    clip_init: logit of the learnable clipping factors (sigmoid(4.0) = 0.982, FlatQuant's init).
    qdrop_prob: QDrop's probability of keeping an activation element unquantized during training.
    gptq_blocksize / gptq_damp: QuaRot's GPTQ settings; rotation_seed: QuaRot's random signs.
    """

    method: str = "flatquant"
    w_bits: int = 4
    a_bits: int = 4
    linears: tuple[str, ...] = LINEAR_ROLES
    quantize_head: bool = False
    quantize_embed: bool = False
    head_bits: int = 8
    embed_bits: int = 8
    seed: int = 0
    smooth_alpha: float = 0.3
    clip_init: float = 4.0
    learn_weight_clip: bool = True
    learn_act_clip: bool = True
    qdrop_prob: float = 0.5
    gptq_blocksize: int = 128
    gptq_damp: float = 0.01
    rotation_seed: int | None = None  # None = seed

    def __post_init__(self) -> None:
        if self.method not in quant_methods():
            raise ConfigError(f"method: {self.method!r} is not allowed; allowed: {', '.join(quant_methods())}",
                              field="method")
        check_bits("w_bits", self.w_bits)
        check_bits("a_bits", self.a_bits)
        check_bits("head_bits", self.head_bits)
        check_bits("embed_bits", self.embed_bits)
        if self.w_bits == FP_BITS and self.a_bits != FP_BITS:
            raise ConfigError(f"a_bits: w_bits=16 (unquantized weights) needs a_bits=16 too; got {self.a_bits}",
                              field="a_bits")
        set_field(self, "linears", tuple(self.linears))
        bad = [r for r in self.linears if r not in LINEAR_ROLES]
        if bad:
            raise ConfigError(f"linears: {bad[0]!r} is not a linear role; allowed: {', '.join(LINEAR_ROLES)}",
                              field="linears")
        for point, roles in ACT_POINTS.items():
            chosen = [r for r in roles if r in self.linears]
            if chosen and len(chosen) != len(roles):
                raise ConfigError(f"linears: {','.join(self.linears)} splits the {point!r} group; roles "
                                  f"{','.join(roles)} share one input and must be quantized together", field="linears")
        for name in ("quantize_head", "quantize_embed", "learn_weight_clip", "learn_act_clip"):
            check_bool(name, getattr(self, name))
        check_int("seed", self.seed, 0)
        check_int("rotation_seed", self.rotation_seed, 0, optional=True)
        check_float("smooth_alpha", self.smooth_alpha, 0.0, 1.0)
        check_float("clip_init", self.clip_init)
        check_float("qdrop_prob", self.qdrop_prob, 0.0, 1.0, hi_open=True)
        check_int("gptq_blocksize", self.gptq_blocksize, 1)
        check_float("gptq_damp", self.gptq_damp, 0.0, lo_open=True)

    # -------------------------------------------------------------- helpers
    @classmethod
    def from_bits(cls, setting: str, method: str = "flatquant", **kw: Any) -> QuantConfig:
        """`QuantConfig.from_bits("w4a4", method="rtn")`; settings: faircalib.quant.bits.SETTINGS."""
        _, (w, a) = parse_setting("bits", setting)
        return cls(method=method, w_bits=w, a_bits=a, **kw)

    @property
    def spec(self) -> MethodSpec:
        return method_spec(self.method)

    @property
    def setting(self) -> str:
        return f"w{self.w_bits}a{self.a_bits}"

    @property
    def learned(self) -> bool:
        return self.spec.learned

    @property
    def uses_transforms(self) -> bool:
        return self.spec.transform == "kronecker"

    @property
    def needs_data(self) -> bool:
        return self.spec.needs_data

    @property
    def head_weight_bits(self) -> int:
        """Bits of the stored LM head weight (16 = FP)."""
        return self.w_bits if self.quantize_head else self.head_bits

    @property
    def embed_weight_bits(self) -> int:
        """Bits of the stored embedding table (16 = FP)."""
        return self.w_bits if self.quantize_embed else self.embed_bits

    @property
    def points(self) -> tuple[str, ...]:
        """Activation points whose linears are quantized."""
        return tuple(p for p, roles in ACT_POINTS.items() if roles[0] in self.linears)

    @property
    def effective_rotation_seed(self) -> int:
        return self.seed if self.rotation_seed is None else self.rotation_seed
