"""The method registry: every quantization method this project offers, with its traits and its
Stage II hooks, in one table (docs/method.md §5, docs/architecture.md §4).

Everything that lists or branches on methods derives from `REGISTRY`: `MethodConfig` / `QuantConfig`
validation, the CLI's `--method` choices, the job service's stage plan, the calibration engine's
dispatch, fake-quant installation and the checkpoint size model.

    spec = method_spec("faircalib")
    spec.needs_data, spec.prior, spec.learned, spec.transform        # True, "required", True, "kronecker"

A new method is one `MethodSpec` entry (here, or `register_method(...)` from outside): its traits
and, when Stage II must do something the existing hooks do not, its `Stage2Hooks`.

Boundary: traits and hook references only; the hooks' code lives with the math it runs
(faircalib.quant.quarot for QuaRot/GPTQ, faircalib.quant.transforms for the transform statistics).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from faircalib.configs import check_choice
from faircalib.quant.bits import SETTINGS
from faircalib.quant.quarot import hessian_observer, load_quarot_block, prepare_quarot, quarot_block
from faircalib.quant.transforms import absmax_observer

PRIOR_USE = ("never", "required", "optional")  # optional: MethodConfig.qdrop_weighted switches it on
TRANSFORMS = ("none", "kronecker", "hadamard")


@dataclass(frozen=True)
class Stage2Hooks:
    """What the Stage II engine (faircalib.calibrate.engine) calls for a method, block by block.

    prepare(model, qcfg) -> record: once before the first block (QuaRot: rotate the model in place).
    observe(stats) -> fn(point, x): what the FP pass records per activation point into `stats`
      (max|x| for the transform init, input Hessians for GPTQ); None records nothing.
    solve_block(block, qcfg, stats) -> tensors: a one-shot method's block (GPTQ), installing deployment
      modules and returning its state for resume; None = the engine trains the block's quantization
      parameters with the position-weighted loss (the learned methods).
    load_block(block, qcfg, tensors): rebuild a one-shot block from its saved state (resume)."""

    prepare: Callable[[Any, Any], dict] | None = None
    observe: Callable[[dict], Callable[[str, Any], None]] | None = None
    solve_block: Callable[[Any, Any, dict], dict] | None = None
    load_block: Callable[[Any, Any, dict], None] | None = None


@dataclass(frozen=True)
class MethodSpec:
    """One method's traits.

    quantizes: False only for `fp` (the unquantized reference run).
    needs_data: Stage II runs on calibration sequences.
    prior: whether the Stage I position prior weights the Stage II loss ("never", "required",
      "optional" = only with MethodConfig.qdrop_weighted).
    learned: Stage II trains quantization parameters (clipping, transforms) by the weighted loss.
    transform: the activation transform ("kronecker": learned FlatQuant transforms; "hadamard":
      QuaRot's fixed rotations; "none").
    act_drop: QDrop's random activation-quantization drop during training.
    bits: the bit settings it runs at.
    stage2: the engine hooks (None: no calibration engine: fp, rtn)."""

    name: str
    summary: str
    quantizes: bool = True
    needs_data: bool = False
    prior: str = "never"
    learned: bool = False
    transform: str = "none"
    act_drop: bool = False
    bits: tuple[str, ...] = tuple(SETTINGS)
    stage2: Stage2Hooks | None = None

    def __post_init__(self) -> None:
        check_choice(f"method {self.name!r} prior", self.prior, PRIOR_USE)
        check_choice(f"method {self.name!r} transform", self.transform, TRANSFORMS)
        for b in self.bits:
            check_choice(f"method {self.name!r} bits", b, SETTINGS)
        if self.needs_data != (self.stage2 is not None):
            raise ValueError(f"method {self.name!r}: a method needs calibration data exactly when it has Stage II hooks")
        if self.learned and self.stage2 is not None and self.stage2.solve_block is not None:
            raise ValueError(f"method {self.name!r}: a learned method is trained by the engine (no solve_block)")

    @property
    def weighted_loss(self) -> bool:
        """Stage II minimises a (position-)weighted loss, so it can take position weights."""
        return self.learned

    def uses_prior(self, qdrop_weighted: bool = False) -> bool:
        return self.prior == "required" or (self.prior == "optional" and qdrop_weighted)


_LEARNED = dict(quantizes=True, needs_data=True, learned=True)
REGISTRY: dict[str, MethodSpec] = {spec.name: spec for spec in (
    MethodSpec("fp", "the unquantized model (the reference every method is compared with)", quantizes=False),
    MethodSpec("rtn", "round-to-nearest weights, per-token activations; no data"),
    MethodSpec("quarot", "Hadamard rotations, then GPTQ weights from calibration Hessians", needs_data=True,
               transform="hadamard", stage2=Stage2Hooks(prepare=prepare_quarot, observe=hessian_observer,
                                                        solve_block=quarot_block, load_block=load_quarot_block)),
    MethodSpec("flatquant", "learned Kronecker transforms and clipping, uniform position weights", **_LEARNED,
               transform="kronecker", stage2=Stage2Hooks(observe=absmax_observer)),
    MethodSpec("qdrop", "learned clipping with QDrop's random activation-quantization drop", **_LEARNED,
               act_drop=True, prior="optional", stage2=Stage2Hooks()),
    MethodSpec("faircalib", "FlatQuant's Stage II with the Stage I position prior as the loss weights",
               **_LEARNED, transform="kronecker", prior="required", stage2=Stage2Hooks(observe=absmax_observer)),
)}


def methods() -> tuple[str, ...]:
    """Every method name, `fp` included (what a method run / a job may name)."""
    return tuple(REGISTRY)


def quant_methods() -> tuple[str, ...]:
    """The methods that quantize (what `QuantConfig.method` and `faircalib quantize --method` take)."""
    return tuple(n for n, s in REGISTRY.items() if s.quantizes)


def method_spec(name: str, field: str = "method") -> MethodSpec:
    check_choice(field, name, REGISTRY)
    return REGISTRY[name]


def register_method(spec: MethodSpec, *, replace: bool = False) -> MethodSpec:
    """Add a method to the registry (extensions; the built-ins are above)."""
    if spec.name in REGISTRY and not replace:
        raise ValueError(f"method {spec.name!r} is already registered")
    REGISTRY[spec.name] = spec
    return spec


__all__ = ["PRIOR_USE", "REGISTRY", "TRANSFORMS", "MethodSpec", "Stage2Hooks", "method_spec", "methods",
           "quant_methods", "register_method"]
