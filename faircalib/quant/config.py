"""Quantization and Stage II calibration settings (SPEC.md §2-§3) as frozen, validated dataclasses.

`QuantConfig` says *what* is quantized and how (method, bit widths, which linears, method knobs);
`CalibConfig` says how Stage II trains (optimiser, schedule, epochs, NaN policy, streaming). Both
round-trip to JSON (`to_dict` / `from_dict`) so every artifact records them.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from faircalib.errors import ConfigError
from faircalib.models.base import ACT_POINTS, LINEAR_ROLES

METHODS = ("rtn", "quarot", "flatquant", "qdrop", "faircalib")
LEARNED_METHODS = ("flatquant", "qdrop", "faircalib")  # trained by calibrate_layerwise
TRANSFORM_METHODS = ("flatquant", "faircalib")  # FlatQuant-style Kronecker transforms
DATA_METHODS = LEARNED_METHODS + ("quarot",)  # need calibration data (quarot: GPTQ Hessians)
NAN_POLICIES = ("error", "rtn")
SETTINGS = {"w4a4": (4, 4), "w3a4": (3, 4), "w8a8": (8, 8), "w4a16": (4, 16), "w8a16": (8, 16),
            "w4a8": (4, 8), "w4a3": (4, 3), "w3a3": (3, 3)}  # w4a3 / w3a3: stress settings (fidelity benchmark)
FP_BITS = 16  # a bit width of 16 means "not quantized" (A16 = activations stay floating point)


def _check_bits(name: str, value: int) -> None:
    if not (isinstance(value, int) and (2 <= value <= 8 or value == FP_BITS)):
        raise ConfigError(f"{name}={value!r} is not supported; allowed: 2..8, or {FP_BITS} for unquantized")


def _choice(name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is not supported; allowed: {', '.join(map(str, allowed))}")


@dataclass(frozen=True)
class QuantConfig:
    """What to quantize and how.

    method: rtn | quarot | flatquant | qdrop | faircalib (faircalib = flatquant + position weights).
    w_bits / a_bits: 2..8, or 16 for unquantized (a_bits=16 is A16: weight-only quantization).
    linears: block linear roles to quantize; must be whole activation groups (q,k,v share an input,
      as do gate,up) because they share one input transform.
    quantize_head / quantize_embed: the LM head / embedding stay FP by default; when enabled they are
      RTN-quantized per output row at w_bits (the head's input per token at a_bits).
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
        _choice("method", self.method, METHODS)
        _check_bits("w_bits", self.w_bits)
        _check_bits("a_bits", self.a_bits)
        if self.w_bits == FP_BITS and self.a_bits != FP_BITS:
            raise ConfigError(f"w_bits=16 (unquantized weights) needs a_bits=16 too; got a_bits={self.a_bits}")
        object.__setattr__(self, "linears", tuple(self.linears))
        bad = [r for r in self.linears if r not in LINEAR_ROLES]
        if bad:
            raise ConfigError(f"linears contains {bad[0]!r}; allowed roles: {', '.join(LINEAR_ROLES)}")
        for point, roles in ACT_POINTS.items():
            chosen = [r for r in roles if r in self.linears]
            if chosen and len(chosen) != len(roles):
                raise ConfigError(f"linears={','.join(self.linears)} splits the {point!r} group; roles "
                                  f"{','.join(roles)} share one input and must be quantized together")
        if not 0.0 <= self.smooth_alpha <= 1.0:
            raise ConfigError(f"smooth_alpha={self.smooth_alpha} must be in [0, 1]")
        if not 0.0 <= self.qdrop_prob < 1.0:
            raise ConfigError(f"qdrop_prob={self.qdrop_prob} must be in [0, 1)")
        if self.gptq_blocksize < 1:
            raise ConfigError(f"gptq_blocksize={self.gptq_blocksize} must be >= 1")
        if self.gptq_damp <= 0:
            raise ConfigError(f"gptq_damp={self.gptq_damp} must be > 0")

    # -------------------------------------------------------------- helpers
    @classmethod
    def from_bits(cls, setting: str, method: str = "flatquant", **kw: Any) -> QuantConfig:
        """`QuantConfig.from_bits("w4a4", method="rtn")`; settings: w4a4, w3a4, w8a8, w4a16, w8a16, w4a8."""
        key = setting.lower()
        if key not in SETTINGS:
            raise ConfigError(f"setting={setting!r} is not supported; allowed: {', '.join(SETTINGS)}")
        w, a = SETTINGS[key]
        return cls(method=method, w_bits=w, a_bits=a, **kw)

    @property
    def setting(self) -> str:
        return f"w{self.w_bits}a{self.a_bits}"

    @property
    def learned(self) -> bool:
        return self.method in LEARNED_METHODS

    @property
    def uses_transforms(self) -> bool:
        return self.method in TRANSFORM_METHODS

    @property
    def needs_data(self) -> bool:
        return self.method in DATA_METHODS

    @property
    def points(self) -> tuple[str, ...]:
        """Activation points whose linears are quantized."""
        return tuple(p for p, roles in ACT_POINTS.items() if roles[0] in self.linears)

    @property
    def effective_rotation_seed(self) -> int:
        return self.seed if self.rotation_seed is None else self.rotation_seed

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["linears"] = list(self.linears)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QuantConfig:
        known = {f.name for f in fields(cls)}
        extra = sorted(set(d) - known)
        if extra:
            raise ConfigError(f"unknown QuantConfig field {extra[0]!r}; known: {', '.join(sorted(known))}")
        d = dict(d)
        if "linears" in d:
            d["linears"] = tuple(d["linears"])
        return cls(**d)

    def replace(self, **kw: Any) -> QuantConfig:
        return replace(self, **kw)


@dataclass(frozen=True)
class CalibConfig:
    """Stage II optimiser and engine settings (FlatQuant defaults, SPEC.md §3).

    AdamW with lr for transforms/scales and lr * clip_lr_mult for clipping factors, cosine schedule per
    block down to lr * min_lr_ratio over epochs * ceil(N / batch_size) steps. loss_normalize divides the
    loss by its detached value (unit-scale gradients). nan_policy: "error" stops with CalibrationError
    naming the block; "rtn" falls back to RTN for that block and records it. streaming=False keeps every
    block's FP activations and an FP teacher copy resident (the non-streaming reference for memory).
    """

    epochs: int = 15
    batch_size: int = 4
    lr: float = 5e-3
    clip_lr_mult: float = 10.0
    min_lr_ratio: float = 1e-3
    weight_decay: float = 0.0
    loss_normalize: bool = False
    nan_policy: str = "error"
    streaming: bool = True
    eval_batch_size: int = 8  # sequences per no_grad forward (FP targets, statistics)

    def __post_init__(self) -> None:
        if self.epochs < 0:
            raise ConfigError(f"epochs={self.epochs} must be >= 0")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size={self.batch_size} must be >= 1")
        if self.eval_batch_size < 1:
            raise ConfigError(f"eval_batch_size={self.eval_batch_size} must be >= 1")
        if not self.lr > 0:
            raise ConfigError(f"lr={self.lr} must be > 0")
        if not self.clip_lr_mult > 0:
            raise ConfigError(f"clip_lr_mult={self.clip_lr_mult} must be > 0")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"min_lr_ratio={self.min_lr_ratio} must be in [0, 1]")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay={self.weight_decay} must be >= 0")
        _choice("nan_policy", self.nan_policy, NAN_POLICIES)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CalibConfig:
        known = {f.name for f in fields(cls)}
        extra = sorted(set(d) - known)
        if extra:
            raise ConfigError(f"unknown CalibConfig field {extra[0]!r}; known: {', '.join(sorted(known))}")
        return cls(**d)

    def replace(self, **kw: Any) -> CalibConfig:
        return replace(self, **kw)
