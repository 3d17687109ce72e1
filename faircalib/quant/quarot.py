"""QuaRot's function-preserving rotations (docs/method.md §5), applied in place to a native DiffusionLM.

`rotate_model` (float64 folding, cast back to the model dtype):
  1. fuses each RMSNorm weight into the linears it feeds (attn_norm -> q/k/v, mlp_norm -> gate/up,
     final norm -> head) and sets the norm weights to 1 (a weightless RMSNorm commutes with any
     orthogonal Q because ||x Q|| = ||x||);
  2. rotates the residual stream by a randomised Hadamard Q_r (d_model): embedding E <- E Q_r, readers
     (q, k, v, gate, up, head) W <- W Q_r, writers (o, down) W <- Q_rᵀ W, b <- Q_rᵀ b; a tied head is
     untied first (the fused head differs from the rotated embedding);
  3. installs online rotations `OnlineRotation(Q)` before down_proj (Q over d_ff) and, unless
     `online_o=False`, before o_proj (Q over n_heads·head_dim), folding W <- W Q into those linears.
Sizes that are not a supported Hadamard order fall back to block-Hadamard / random orthogonal; `info`
states the kind of every rotation. Weight quantization (GPTQ) is a separate step (`faircalib.quant.gptq`).

QuaRot's Stage II hooks (registered in faircalib.quant.methods, called by faircalib.calibrate.engine):
`prepare_quarot` rotates the FP model; during each block's FP pass `hessian_observer` accumulates the
input Hessian of every activation point (the input the linears really see, after the online
rotation); `quarot_block` then quantizes the block's weights with GPTQ and installs QuantLinears
(activations are quantized per token at run time, clip 1); `load_quarot_block` rebuilds a block from
its saved codes on resume. Token weights are uniform (QuaRot is a baseline; docs/method.md §5).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from faircalib.errors import ConfigError
from faircalib.models.base import ACT_POINTS, LINEAR_ROLES, DecoderBlock, DiffusionLM
from faircalib.quant.gptq import HessianAccumulator, gptq_factor, gptq_quantize
from faircalib.quant.hadamard import OnlineRotation, StructuredOrthogonal, structured_orthogonal
from faircalib.quant.runtime import QuantLinear

if TYPE_CHECKING:  # annotations only: quant.config -> quant.methods -> this module
    from faircalib.quant.config import QuantConfig

RESIDUAL_READERS = ("q", "k", "v", "gate", "up")
RESIDUAL_WRITERS = ("o", "down")
NORM_FEEDS = {"attn_norm": ("q", "k", "v"), "mlp_norm": ("gate", "up")}


_CHUNK_ELEMENTS = 1 << 24  # float64 scratch per step of the folding (128 MB)


def _set(p: torch.Tensor, value64: torch.Tensor) -> None:
    p.data.copy_(value64.to(p.dtype))


def _map_rows(t: torch.Tensor, fn) -> None:
    """t[rows] <- fn(t[rows] in float64), in place, a chunk of rows at a time: folding a (126464, 4096)
    embedding or head never materialises a float64 copy of the whole matrix (4 GB, plus temporaries)."""
    rows = max(1, _CHUNK_ELEMENTS // max(1, t.shape[-1]))
    for a in range(0, t.shape[0], rows):
        t.data[a:a + rows].copy_(fn(t.data[a:a + rows].double()).to(t.dtype))


def _map_cols(t: torch.Tensor, fn) -> None:
    """t[:, cols] <- fn(t[:, cols]ᵀ in float64)ᵀ, in place, a chunk of columns at a time."""
    cols = max(1, _CHUNK_ELEMENTS // max(1, t.shape[0]))
    for a in range(0, t.shape[1], cols):
        t.data[:, a:a + cols].copy_(fn(t.data[:, a:a + cols].double().T).T.to(t.dtype))


def _untie_head(model: DiffusionLM) -> None:
    """Give a tied model its own LM head (a copy of the embedding) so the two can be transformed apart."""
    emb = model.embed_tokens.weight
    head = nn.Linear(emb.shape[1], emb.shape[0], bias=False, device=emb.device, dtype=emb.dtype)
    head.weight.data.copy_(emb.data)
    if model.arch == "llada":
        model.model.transformer["ff_out"] = head
    elif model.arch == "dream":
        model.lm_head = head
    else:
        raise ConfigError(f"rotate_model: cannot untie the head of architecture {model.arch!r}")
    model.config = replace(model.config, tie_word_embeddings=False)


def _check(model: DiffusionLM) -> None:
    for i, block in enumerate(model.blocks):
        for r in LINEAR_ROLES:
            if type(block.role(r)) is not nn.Linear:
                raise ConfigError(f"rotate_model: block {i} role {r!r} is {type(block.role(r)).__name__}, not "
                                  f"nn.Linear; rotate the FP model before installing quantized modules")
        if len(block.act_transforms):
            raise ConfigError(f"rotate_model: block {i} already has act_transforms {list(block.act_transforms)}; "
                              f"rotate a fresh FP model")


@torch.no_grad()
def fuse_norms(model: DiffusionLM) -> None:
    """Fold every RMSNorm weight into the following linears' input columns and set it to 1."""
    head = model.lm_head
    pairs = [(b.role(n), [b.role(r) for r in rs]) for b in model.blocks for n, rs in NORM_FEEDS.items()]
    for norm, linears in pairs + [(model.final_norm, [head])]:
        g = norm.weight.double()  # (D,)
        for lin in linears:
            _map_rows(lin.weight, lambda w, g=g: w * g[None, :])  # (N, D) · diag(g)
        norm.weight.data.fill_(1.0)


@torch.no_grad()
def rotate_model(model: DiffusionLM, seed: int = 0, *, online_o: bool = True, untie: bool = True,
                 prefer: str = "hadamard") -> dict[str, Any]:
    """Rotate `model` in place (logits unchanged up to float error). Returns what was done:
    {"residual": kind, "down": kind, "o": kind | None, "seed", "seeds", "prefer", "untied", "sizes"}.
    A loader rebuilds an online rotation with `OnlineRotation(structured_orthogonal(sizes[k], seeds[k], prefer))`.

    Seeds: residual `seed`, down `seed + 1`, o `seed + 2` (each a seeded diag(±1) · Hadamard).
    """
    _check(model)
    untied = False
    if model.lm_head is None:
        if not untie:
            raise ConfigError("rotate_model: the LM head is tied to the embedding; pass untie=True (the head gets "
                              "its own copy) to rotate this model")
        _untie_head(model)
        untied = True
    fuse_norms(model)
    cfg = model.config
    d_attn = cfg.n_heads * cfg.head_dim
    q_res = structured_orthogonal(cfg.d_model, seed, prefer)
    q_down = structured_orthogonal(cfg.d_ff, seed + 1, prefer)
    q_o = structured_orthogonal(d_attn, seed + 2, prefer) if online_o else None

    emb = model.embed_tokens.weight
    _map_rows(emb, q_res.apply)  # (V, D) E Q
    _rotate_inputs(model.lm_head, q_res)
    for block in model.blocks:
        for r in RESIDUAL_READERS:
            _rotate_inputs(block.role(r), q_res)
        for r in RESIDUAL_WRITERS:
            _rotate_outputs(block.role(r), q_res)
        _rotate_inputs(block.role("down"), q_down)
        block.act_transforms["down"] = OnlineRotation(q_down).to(emb.device)
        if q_o is not None:
            _rotate_inputs(block.role("o"), q_o)
            block.act_transforms["o"] = OnlineRotation(q_o).to(emb.device)
    return {"residual": q_res.kind, "down": q_down.kind, "o": None if q_o is None else q_o.kind, "seed": seed,
            "seeds": {"residual": seed, "down": seed + 1, "o": seed + 2}, "prefer": prefer, "untied": untied, "sizes": {"residual": cfg.d_model, "down": cfg.d_ff, "o": d_attn}}


def _rotate_inputs(lin: nn.Linear, q: StructuredOrthogonal) -> None:
    """The linear now reads x Q: W <- W Q (rows of W rotate like x). Bias unchanged."""
    _map_rows(lin.weight, q.apply)  # (N, K) @ (K, K)


def _rotate_outputs(lin: nn.Linear, q: StructuredOrthogonal) -> None:
    """The linear now writes y Q: W <- Qᵀ W, b <- Qᵀ b (as column vectors; i.e. bᵀ Q)."""
    _map_cols(lin.weight, q.apply)  # (N, K): (Wᵀ Q)ᵀ = Qᵀ W, column chunks of W
    if lin.bias is not None:
        _set(lin.bias, q.apply(lin.bias.double()))


# ---------------------------------------------------------------------------------------------- Stage II hooks
def prepare_quarot(model: DiffusionLM, qcfg: QuantConfig) -> dict[str, Any]:
    """Rotate the FP model in place (function-preserving); returns rotate_model's record."""
    return rotate_model(model, seed=qcfg.effective_rotation_seed)


def hessian_observer(stats: dict[str, Any]) -> Callable[[str, torch.Tensor], None]:
    """Observer for the engine's FP pass: accumulates H = 2/n Σ x xᵀ per activation point in `stats`."""
    def observe(point: str, x: torch.Tensor) -> None:
        if point not in stats:
            stats[point] = HessianAccumulator(x.shape[-1], device=x.device)
        stats[point].add(x.detach())
    return observe


@torch.no_grad()
def quarot_block(block: DecoderBlock, qcfg: QuantConfig, stats: dict[str, Any]) -> dict[str, torch.Tensor]:
    """GPTQ every quantized linear of the block with its point's Hessian; install QuantLinears.
    Returns the codes/scales (the block's state for resume)."""
    state: dict[str, torch.Tensor] = {}
    for point in qcfg.points:
        # one factorisation per activation point (q/k/v and gate/up share their input's Hessian); the
        # accumulator is handed over and freed, so at most one (K, K) float64 pair is alive at a time
        factor = gptq_factor(stats.pop(point).H, qcfg.gptq_damp, consume=True)
        for role in ACT_POINTS[point]:
            lin = block.role(role)
            res = gptq_quantize(lin.weight.detach(), None, qcfg.w_bits, blocksize=qcfg.gptq_blocksize,
                                damp=qcfg.gptq_damp, factor=factor)
            state[f"{role}.codes"], state[f"{role}.scales"] = res.codes, res.scales
            block.set_role(role, QuantLinear.from_codes(res.codes, res.scales, lin.bias, qcfg.w_bits, qcfg.a_bits))
    return state


@torch.no_grad()
def load_quarot_block(block: DecoderBlock, qcfg: QuantConfig, state: dict[str, torch.Tensor]) -> None:
    """Rebuild a block's QuantLinears from saved GPTQ codes/scales (resume)."""
    for point in qcfg.points:
        for role in ACT_POINTS[point]:
            lin = block.role(role)
            codes = state[f"{role}.codes"].to(lin.weight.device)
            block.set_role(role, QuantLinear.from_codes(codes, state[f"{role}.scales"], lin.bias, qcfg.w_bits,
                                                        qcfg.a_bits))
