"""Fake-quant (training-time) modules that plug into a block through its seams (docs/method.md §5).

  ActPoint          installed in `block.act_transforms[point]`: optional input transform (a learnable
                    `KroneckerTransform`, or a fixed module such as QuaRot's online rotation), then
                    per-token fake quantization with a learnable clipping factor; QDrop's random drop
                    of activation quantization while training.
  FakeQuantLinear   installed with `block.set_role(role, ...)`: the frozen FP weight, mapped through the
                    point's transform (W -> (W ⊘ d)(P1 ⊗ P2)^-T) and fake-quantized per output channel
                    with learnable clipping.

One activation quantizer per point: linears sharing an input (q/k/v, gate/up) consume the same
quantized activation, as a fused transform+quantize kernel would produce it. Clipping factors are
sigmoid(logit); `clip_logit=None` means clip = 1 (plain RTN). `install_fake_block` builds a block's
modules for a method; `restore_fp_block` undoes it. Folding to deployment modules is fold.py's job.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from faircalib.models.base import ACT_POINTS, DecoderBlock
from faircalib.quant.bits import FP_BITS
from faircalib.quant.config import QuantConfig
from faircalib.quant.quantizer import fake_quant
from faircalib.quant.transforms import KroneckerTransform, smooth_scale

CLIP_KEY = "clip_logit"  # parameters with this name train at lr * clip_lr_mult


class ActPoint(nn.Module):
    """x -> Q_a(T(x)) per token. transform: None, a KroneckerTransform (learned) or a fixed module."""

    def __init__(self, transform: nn.Module | None, a_bits: int, clip_init: float | None = None,
                 drop_prob: float = 0.0):
        super().__init__()
        self.transform = transform
        self.a_bits = a_bits
        self.drop_prob = drop_prob
        self.generator: torch.Generator | None = None  # QDrop's RNG, set by the calibration engine
        if clip_init is None or a_bits >= FP_BITS:
            self.clip_logit = None
        else:
            self.clip_logit = nn.Parameter(torch.tensor(float(clip_init)))

    def clip(self) -> torch.Tensor | float:
        return 1.0 if self.clip_logit is None else torch.sigmoid(self.clip_logit)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(…, K) -> (…, K) in x's dtype; the transform and the quantizer compute in (at least) float32, so a
        bf16 model stays bf16 around float32 quantization parameters."""
        dtype = x.dtype
        if self.transform is not None:
            x = self.transform(x)
        if self.a_bits >= FP_BITS:
            return x.to(dtype)
        x = x if x.dtype in (torch.float32, torch.float64) else x.float()
        xq = fake_quant(x, self.a_bits, self.clip())
        if self.training and self.drop_prob > 0:  # QDrop: keep each element FP with prob drop_prob
            keep_fp = torch.rand(x.shape, generator=self.generator, device=x.device) < self.drop_prob
            xq = torch.where(keep_fp, x, xq)
        return xq.to(dtype)

    def extra_repr(self) -> str:
        return f"a_bits={self.a_bits}, learn_clip={self.clip_logit is not None}, drop_prob={self.drop_prob}"


class FakeQuantLinear(nn.Module):
    """y = x · Q_w(T_w(W))ᵀ + b with W, b the frozen FP parameters of the original linear.

    weight_transform: the point's `KroneckerTransform.transform_weight` (or None); stored as a plain
    callable so the transform's parameters are registered once, in the ActPoint.
    """

    def __init__(self, linear: nn.Linear, w_bits: int, clip_init: float | None = None,
                 weight_transform: Callable[[torch.Tensor], torch.Tensor] | None = None):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.w_bits = w_bits
        self.weight = linear.weight
        self.bias = linear.bias
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        self.weight_transform = weight_transform
        if clip_init is None or w_bits >= FP_BITS:
            self.clip_logit = None
        else:
            self.clip_logit = nn.Parameter(torch.full((self.out_features,), float(clip_init)))

    def clip(self) -> torch.Tensor | float:
        return 1.0 if self.clip_logit is None else torch.sigmoid(self.clip_logit)[:, None]  # (N, 1)

    def transformed_weight(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """T_w(W) (N, K) before quantization."""
        if self.weight_transform is None:
            return self.weight if dtype is None else self.weight.to(dtype)
        return self.weight_transform(self.weight, dtype)

    def fake_weight(self) -> torch.Tensor:
        """Q_w(T_w(W)) (N, K) in (at least) float32."""
        return fake_quant(self.transformed_weight(torch.promote_types(self.weight.dtype, torch.float32)),
                          self.w_bits, self.clip())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The weight is transformed and fake-quantized in (at least) float32, then used in x's dtype.

        While training, the weight path runs under activation checkpointing: it depends on parameters only,
        and keeping its float32 intermediates (the cast weight, W ⊘ d, both Kronecker factors' products,
        the quantizer's steps: ~8 weight-sized tensors per linear) for the backward pass would cost ~7 GB
        per LLaDA-8B block; recomputing them in the backward costs one extra forward of this path."""
        if torch.is_grad_enabled() and self._trainable():
            w = checkpoint(self.fake_weight, use_reentrant=False)
        else:
            w = self.fake_weight()
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, w.to(x.dtype), bias)

    def _trainable(self) -> bool:
        if self.clip_logit is not None and self.clip_logit.requires_grad:
            return True
        owner = getattr(self.weight_transform, "__self__", None)  # the point's KroneckerTransform
        return owner is not None and any(p.requires_grad for p in owner.parameters())

    def to_linear(self) -> nn.Linear:
        """The original FP linear (same Parameter objects)."""
        lin = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                        device=self.weight.device, dtype=self.weight.dtype)
        lin.weight = self.weight
        if self.bias is not None:
            lin.bias = self.bias
        return lin

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, w_bits={self.w_bits}, "
                f"transform={self.weight_transform is not None}, learn_clip={self.clip_logit is not None}")


def point_weight_absmax(block: DecoderBlock, point: str) -> torch.Tensor:
    """max |W[:, k]| over every output row of the linears reading `point`: (K,)."""
    ws = [block.role(r).weight.detach() for r in ACT_POINTS[point]]
    return torch.cat(ws, 0).abs().amax(0).float()


def install_fake_block(block: DecoderBlock, qcfg: QuantConfig, x_absmax: dict[str, torch.Tensor] | None = None,
                       rtn: bool = False) -> None:
    """Replace the block's quantized linears by FakeQuantLinear and install ActPoints, per the method's
    traits (faircalib.quant.methods):

    transform "kronecker" (flatquant, faircalib): Kronecker transform with SmoothQuant diag init from
      `x_absmax` (point -> (K,) max |x| over calibration tokens; ones when None).
    learned: learnable weight/act clipping; act_drop (qdrop): QDrop's drop probability on the
      activation quantizers.
    rtn=True (or a method that is not learned): no transform, no learnable parameter (clip = 1):
      plain round-to-nearest in fake form.
    A fixed module already installed at a point (QuaRot's rotation) is kept as the point's transform.
    """
    spec = qcfg.spec
    learn = spec.learned and not rtn
    for point in qcfg.points:
        existing = block.act_transforms[point] if point in block.act_transforms else None  # noqa: SIM401
        transform = existing
        if learn and spec.transform == "kronecker":
            if existing is not None:
                raise ValueError(f"point {point!r} already has a transform ({type(existing).__name__}); "
                                 f"FlatQuant transforms cannot be stacked on it")
            K = block.role(ACT_POINTS[point][0]).in_features
            diag = None
            if x_absmax is not None and point in x_absmax:
                diag = smooth_scale(point_weight_absmax(block, point).cpu(), x_absmax[point].cpu(),
                                    qcfg.smooth_alpha)
            transform = KroneckerTransform(K, diag).to(block.role(ACT_POINTS[point][0]).weight.device)
        a_clip = qcfg.clip_init if (learn and qcfg.learn_act_clip) else None
        drop = qcfg.qdrop_prob if (learn and spec.act_drop) else 0.0
        ap = ActPoint(transform, qcfg.a_bits, a_clip, drop)
        wt = transform.transform_weight if isinstance(transform, KroneckerTransform) else None
        w_clip = qcfg.clip_init if (learn and qcfg.learn_weight_clip) else None
        for role in ACT_POINTS[point]:
            lin = block.role(role)
            if isinstance(lin, FakeQuantLinear):
                lin = lin.to_linear()
            block.set_role(role, FakeQuantLinear(lin, qcfg.w_bits, w_clip, wt).to(lin.weight.device))
        block.act_transforms[point] = ap.to(block.role(ACT_POINTS[point][0]).weight.device)


def restore_fp_block(block: DecoderBlock) -> None:
    """Undo `install_fake_block`: original linears back, ActPoints replaced by their fixed transforms."""
    for point, roles in ACT_POINTS.items():
        if point in block.act_transforms and isinstance(block.act_transforms[point], ActPoint):
            ap = block.act_transforms[point]
            fixed = ap.transform if not isinstance(ap.transform, KroneckerTransform) else None
            if fixed is None:
                del block.act_transforms[point]
            else:
                block.act_transforms[point] = fixed
        for role in roles:
            lin = block.role(role)
            if isinstance(lin, FakeQuantLinear):
                block.set_role(role, lin.to_linear())


def learnable_parameters(block: nn.Module) -> dict[str, nn.Parameter]:
    """The block's quantization parameters by name (sorted): clipping logits of ActPoints and
    FakeQuantLinears and the Kronecker transforms' p1/p2/diag, e.g. 'act_transforms.qkv.transform.p1',
    'q_proj.clip_logit'. Everything else in the block is FP and frozen during calibration."""
    out: dict[str, nn.Parameter] = {}
    for name, mod in block.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(mod, (ActPoint, FakeQuantLinear)) and mod.clip_logit is not None:
            out[prefix + CLIP_KEY] = mod.clip_logit
        if isinstance(mod, KroneckerTransform):
            for pname, p in mod.named_parameters(recurse=False):
                out[prefix + pname] = p
    return dict(sorted(out.items()))


def freeze_fp_parameters(block: nn.Module) -> None:
    """Only quantization parameters (transforms, clipping) require gradients."""
    learn = {id(p) for p in learnable_parameters(block).values()}
    for p in block.parameters():
        p.requires_grad_(id(p) in learn)
