"""Stage II: layer-wise teacher-forcing calibration with a position-weighted hidden-state loss
(docs/method.md §3). One engine for every data-driven method (FlatQuant, FAIR-Calib, QDrop-style,
QuaRot/GPTQ); what differs per method comes from its registry entry (faircalib.quant.methods): the
`Stage2Hooks` (prepare the model, what the FP pass observes, a one-shot block solver) and the traits.

For each block l in order:
  1. FP pass under no_grad on the block's input h_l (N, S, D) -> FP output h_{l+1}, collecting what
     the method needs (per-channel max|x| at each activation point for the SmoothQuant init; input
     Hessians for GPTQ);
  2. a learned method: install its fake-quant modules and train only this block's quantization
     parameters to minimise  mean_n [ sum_i w_ni ||h_q(n, i) - h_fp(n, i)||^2 / sum_i w_ni ]
     (||.||^2 averaged over the hidden dim, i.e. docs/method.md §3's formula / D), AdamW + cosine
     schedule (CalibConfig); a one-shot method (QuaRot): its `solve_block` hook (GPTQ);
  3. save the block's learned parameters (state_dir), fold to deployment modules, and pass the **FP**
     output on as the next block's input (as FlatQuant does).
Streaming: only the current block is moved to `device`; the others and all activations stay on CPU.
`CalibConfig(streaming=False)` is the non-streaming reference (whole model + an FP teacher copy + every
block's activations resident on `device`), same results, more memory.

Boundary: no model surgery beyond the block seams (`set_role`, `act_transforms`); quantizer modules
come from faircalib.quant; progress goes to a callback (the job service forwards it).
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

import faircalib
from faircalib.bf16 import fast_bf16
from faircalib.calibrate.config import CalibConfig
from faircalib.calibrate.state import BlockStateStore
from faircalib.devices import resolve_device
from faircalib.errors import CalibrationError, ConfigError
from faircalib.models.adapter import DLLMAdapter
from faircalib.models.base import DecoderBlock, DiffusionLM
from faircalib.models.hashing import state_dict_hash, tensor_hash
from faircalib.quant.config import QuantConfig
from faircalib.quant.fake import (
    CLIP_KEY,
    ActPoint,
    freeze_fp_parameters,
    install_fake_block,
    learnable_parameters,
    restore_fp_block,
)
from faircalib.quant.fold import fold_block
from faircalib.quant.methods import REGISTRY, Stage2Hooks

ProgressFn = Callable[[dict[str, Any]], None]


# ---------------------------------------------------------------------------------------------- loss
def weighted_mse(out: torch.Tensor, target: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Position-weighted hidden-state MSE. out/target: (B, S, D); w: (B, S) >= 0 ->
    mean over sequences of sum_i w_i e_i / sum_i w_i, with e_i = mean_d (out - target)^2."""
    err = (out.float() - target.float()).pow(2).mean(-1)  # (B, S)
    per_seq = (w * err).sum(-1) / w.sum(-1)  # (B,)
    return per_seq.mean()


# ---------------------------------------------------------------------------------------------- results
@dataclass
class BlockReport:
    block: int
    init_loss: float | None = None
    final_loss: float | None = None
    epoch_losses: list[float] = field(default_factory=list)
    time_s: float = 0.0
    resumed: bool = False
    fallback: str | None = None


@dataclass
class CalibrationResult:
    method: str
    setting: str
    n_blocks: int
    n_sequences: int
    seq_len: int
    streaming: bool
    prior_hash: str | None
    blocks: list[BlockReport] = field(default_factory=list)
    wall_time_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)  # method-specific info (e.g. QuaRot rotations)

    @property
    def fallbacks(self) -> list[dict[str, Any]]:
        return [{"block": b.block, "reason": b.fallback} for b in self.blocks if b.fallback]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["fallbacks"] = self.fallbacks
        return d


# ---------------------------------------------------------------------------------------------- helpers
def _block_seed(seed: int, index: int) -> int:
    return int(hashlib.sha256(f"faircalib-block:{seed}:{index}".encode()).hexdigest()[:15], 16)


def _check_inputs(calib_ids: torch.Tensor, position_weights: torch.Tensor | None) -> torch.Tensor:
    if not isinstance(calib_ids, torch.Tensor) or calib_ids.ndim != 2 or calib_ids.dtype not in (
            torch.int64, torch.int32):
        raise ConfigError(f"calib_ids must be an integer tensor of shape (N, S); got "
                          f"{getattr(calib_ids, 'shape', type(calib_ids))}")
    N, S = calib_ids.shape
    if position_weights is None:
        return torch.ones(N, S)
    w = torch.as_tensor(position_weights, dtype=torch.float32).cpu()
    if w.shape == (S,):
        w = w.expand(N, S)
    if w.shape != (N, S):
        raise ConfigError(f"position_weights has shape {tuple(w.shape)}; expected ({S},) or ({N}, {S}) to match "
                          f"the calibration sequences (align the Stage I prior to the sequence length first)")
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
        raise ConfigError("position_weights must be finite and non-negative")
    if bool((w.sum(-1) <= 0).any()):
        raise ConfigError("position_weights sum to zero for some sequence; every sequence needs positive weight")
    return w.contiguous()


class _Observer(nn.Module):
    """Temporarily installed at an activation point: applies the point's fixed transform (if any),
    hands the result (the linears' input) to `fn`, and returns it unchanged."""

    def __init__(self, point: str, inner: nn.Module | None, fn: Callable[[str, torch.Tensor], None]):
        super().__init__()
        self.point, self.inner, self.fn = point, inner, fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x if self.inner is None else self.inner(x)
        self.fn(self.point, y)
        return y


@torch.no_grad()
def _fp_pass(block: DecoderBlock, h_in: torch.Tensor, ctx, device, batch: int, points: tuple[str, ...],
             observe: Callable[[str, torch.Tensor], None] | None, out: torch.Tensor | None = None) -> torch.Tensor:
    """Block output for all sequences (N, S, D) (written into `out` if given), observing `points`."""
    saved = {}
    if observe is not None:
        for p in points:
            inner = block.act_transforms[p] if p in block.act_transforms else None  # noqa: SIM401 (no .get)
            saved[p] = inner
            block.act_transforms[p] = _Observer(p, inner, observe)
    try:
        out = torch.empty_like(h_in) if out is None else out
        for i in range(0, h_in.shape[0], batch):
            out[i:i + batch] = block(h_in[i:i + batch].to(device), ctx).to(out.device)
    finally:
        for p, inner in saved.items():
            if inner is None:
                del block.act_transforms[p]
            else:
                block.act_transforms[p] = inner
    return out


@torch.no_grad()
def _eval_loss(block: DecoderBlock, h_in: torch.Tensor, target: torch.Tensor, w: torch.Tensor, ctx, device,
               batch: int) -> float:
    block.eval()
    tot = 0.0
    for i in range(0, h_in.shape[0], batch):
        out = block(h_in[i:i + batch].to(device), ctx)
        tot += float(weighted_mse(out, target[i:i + batch].to(device), w[i:i + batch].to(device))) * len(out)
    return tot / h_in.shape[0]


def _set_generators(block: DecoderBlock, gen: torch.Generator) -> None:
    for m in block.modules():
        if isinstance(m, ActPoint) and m.drop_prob > 0:
            m.generator = gen


def _run_key(model: DiffusionLM, qcfg: QuantConfig, ccfg: CalibConfig, calib_ids: torch.Tensor,
             weights: torch.Tensor) -> dict[str, Any]:
    ident = {
        "quant_config": qcfg.to_dict(),
        "calib_config": ccfg.training_dict(),  # data, streaming and eval batching are keyed otherwise / inert
        "calib_ids_sha256": tensor_hash(calib_ids.long()),
        "weights_sha256": tensor_hash(weights),
        "model_sha256": state_dict_hash(model),
    }
    key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()
    return dict(ident, key=key, version=faircalib.__version__)


# ---------------------------------------------------------------------------------------------- training
def _train_block(block: DecoderBlock, index: int, h_in: torch.Tensor, target: torch.Tensor, w: torch.Tensor,
                 ctx, device, qcfg: QuantConfig, ccfg: CalibConfig, report: BlockReport,
                 emit: ProgressFn) -> None:
    """Train the block's quantization parameters in place; raises FloatingPointError on a non-finite loss."""
    params = learnable_parameters(block)
    clips = [p for n, p in params.items() if n.endswith(CLIP_KEY)]
    others = [p for n, p in params.items() if not n.endswith(CLIP_KEY)]
    if not params or ccfg.epochs == 0:
        return
    groups = [g for g in ({"params": others, "lr": ccfg.lr},
                          {"params": clips, "lr": ccfg.lr * ccfg.clip_lr_mult}) if g["params"]]
    opt = torch.optim.AdamW(groups, weight_decay=ccfg.weight_decay)
    N = h_in.shape[0]
    steps_per_epoch = math.ceil(N / ccfg.batch_size)
    total = max(1, ccfg.epochs * steps_per_epoch)
    r = ccfg.min_lr_ratio
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: r + (1 - r) * 0.5 * (1 + math.cos(math.pi * t / total)))
    seed = _block_seed(qcfg.seed, index)
    perm_gen = torch.Generator().manual_seed(seed)
    drop_gen = torch.Generator(device=device).manual_seed(seed + 1)
    _set_generators(block, drop_gen)
    block.train()
    for epoch in range(ccfg.epochs):
        perm = torch.randperm(N, generator=perm_gen)
        tot = 0.0
        for step in range(steps_per_epoch):
            idx = perm[step * ccfg.batch_size:(step + 1) * ccfg.batch_size]
            out = block(h_in[idx].to(device), ctx)
            loss = weighted_mse(out, target[idx].to(device), w[idx].to(device))
            if not bool(torch.isfinite(loss)):
                raise FloatingPointError(f"non-finite loss ({float(loss.detach())}) at epoch {epoch + 1}, step {step + 1}")
            (loss / loss.detach() if ccfg.loss_normalize else loss).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            sched.step()
            tot += float(loss.detach()) * len(idx)
        report.epoch_losses.append(tot / N)
        emit({"event": "epoch", "block": index, "epoch": epoch + 1, "epochs": ccfg.epochs, "loss": tot / N,
              "lr": sched.get_last_lr()[0]})
    block.eval()
    bad = [n for n, p in params.items() if not bool(torch.isfinite(p).all())]
    if bad:
        raise FloatingPointError(f"non-finite parameter {bad[0]} after training")


# ---------------------------------------------------------------------------------------------- engine
def calibrate_layerwise(adapter_or_model: DLLMAdapter | DiffusionLM, calib_ids: torch.Tensor,
                        qcfg: QuantConfig | str, calib_cfg: CalibConfig | None = None,
                        position_weights: torch.Tensor | None = None, state_dir: str | Path | None = None,
                        progress: ProgressFn | None = None, device: str | torch.device = "cpu",
                        finalize: bool = True) -> CalibrationResult:
    """Quantize the model's blocks in place, layer by layer (see the module docstring).

    qcfg: a QuantConfig or a method name (W4A4 defaults). position_weights: (S,) or (N, S), uniform when
    None. state_dir: per-block state for resume (a rerun with the same inputs continues after the last
    finished block and ends with identical parameters). progress(event) gets dicts with "event" in
    start / block_start / epoch / fallback / block_done / done, plus "block", "epoch", "loss".
    finalize=False leaves the trained fake-quant modules installed (for inspection and tests) instead of
    folding each block into deployment modules (QuaRot has no fake form: its blocks always end as
    QuantLinears). Returns the per-block report.
    """
    qcfg = QuantConfig(method=qcfg) if isinstance(qcfg, str) else qcfg
    ccfg = calib_cfg or CalibConfig()
    spec = qcfg.spec
    hooks = spec.stage2 or Stage2Hooks()  # rtn here: its fake form, no training (block losses to compare)
    if not spec.weighted_loss and position_weights is not None:
        learned = ", ".join(n for n, s in REGISTRY.items() if s.weighted_loss)
        raise ConfigError(f"method: position_weights apply to the learned methods ({learned}); {qcfg.method!r} "
                          f"uses uniform token weights - pass position_weights=None", field="method")
    if not isinstance(adapter_or_model, DLLMAdapter):
        from faircalib.models.loader import require_dllm

        require_dllm(adapter_or_model, "faircalib.calibrate.calibrate_layerwise()")
    adapter = adapter_or_model if isinstance(adapter_or_model, DLLMAdapter) else DLLMAdapter(adapter_or_model)
    model = adapter.model
    weights = _check_inputs(calib_ids, position_weights)
    calib_ids = calib_ids.long().cpu()
    N, S = calib_ids.shape
    device = resolve_device(device)
    emit: ProgressFn = progress or (lambda event: None)
    prior_hash = tensor_hash(torch.as_tensor(position_weights, dtype=torch.float32)) \
        if position_weights is not None else None
    t_start = time.perf_counter()
    model.requires_grad_(False)

    store = None
    if state_dir is not None:
        store = BlockStateStore(state_dir, _run_key(model, qcfg, ccfg, calib_ids, weights))

    result = CalibrationResult(method=qcfg.method, setting=qcfg.setting, n_blocks=adapter.n_blocks, n_sequences=N,
                               seq_len=S, streaming=ccfg.streaming, prior_hash=prior_hash)
    if hooks.prepare is not None:
        result.extra[qcfg.method] = hooks.prepare(model, qcfg)
    emit({"event": "start", "method": qcfg.method, "setting": qcfg.setting, "n_blocks": adapter.n_blocks,
          "n_sequences": N, "seq_len": S, "streaming": ccfg.streaming})

    eb = ccfg.eval_batch_size
    ctx = adapter.context(S, None, device)
    act_dtype = _activation_dtype(model)  # block inputs / targets kept in the model dtype (bf16 stays bf16)
    resident: list[torch.Tensor] | None = None
    teacher = None
    if ccfg.streaming:
        with torch.no_grad():
            h = torch.cat([adapter.embed(calib_ids[i:i + eb]).to(act_dtype) for i in range(0, N, eb)])  # (N, S, D) CPU
    else:  # non-streaming reference: everything resident on `device`
        teacher = copy.deepcopy(model).to(device)
        model.to(device)
        with torch.no_grad():
            resident = [torch.cat([teacher.embed(calib_ids[i:i + eb].to(device)).to(act_dtype)
                                   for i in range(0, N, eb)])]
            for blk in teacher.blocks:
                resident.append(_fp_pass(blk, resident[-1], ctx, device, eb, (), None))
        h = resident[0]

    # a bf16 model on a CPU without bf16 units: float32-speed GEMMs, forward and backward (faircalib/bf16.py)
    with fast_bf16(model, training=True) if device.type == "cpu" else nullcontext():
        for index in range(adapter.n_blocks):
            t0 = time.perf_counter()
            block = model.blocks[index]
            report = BlockReport(block=index)
            emit({"event": "block_start", "block": index, "n_blocks": adapter.n_blocks,
                  "epochs": None if hooks.solve_block is not None else ccfg.epochs})  # one-shot: no epochs
            block.to(device)
            resumed = store is not None and store.done(index)
            stats: dict[str, Any] = {}
            observe = hooks.observe(stats) if (hooks.observe is not None and not resumed) else None
            fp_out = _fp_pass(block, h, ctx, device, eb, qcfg.points, observe,
                              out=None if resident is None else torch.empty_like(h))
            if resident is not None:
                fp_out = resident[index + 1]

            if hooks.solve_block is not None:  # one-shot (QuaRot: GPTQ): no fake form, no training
                if resumed:
                    tensors, info = store.load(index)
                    hooks.load_block(block, qcfg, tensors)
                    report = BlockReport(**{k: v for k, v in info.items() if k in BlockReport.__dataclass_fields__})
                    report.resumed = True
                else:
                    tensors = hooks.solve_block(block, qcfg, stats)
                    report.final_loss = _eval_loss(block, h, fp_out, weights, ctx, device, eb)
                    report.time_s = time.perf_counter() - t0
                    if store is not None:
                        store.save(index, tensors, asdict(report))
            else:
                _learned_block(block, index, h, fp_out, weights, ctx, device, qcfg, ccfg, stats, store, report,
                               resumed, lambda e: emit({**e, "n_blocks": adapter.n_blocks}), t0)
                if finalize:
                    fold_block(block, qcfg)
            if ccfg.streaming:
                block.to("cpu")
            result.blocks.append(report)
            emit({"event": "block_done", "block": index, "n_blocks": adapter.n_blocks, "init_loss": report.init_loss,
                  "final_loss": report.final_loss, "time_s": report.time_s, "resumed": report.resumed,
                  "fallback": report.fallback})
            h = fp_out
    if not ccfg.streaming:
        del resident, teacher
        model.to("cpu")
    result.wall_time_s = time.perf_counter() - t_start
    emit({"event": "done", "wall_time_s": result.wall_time_s, "fallbacks": result.fallbacks})
    return result


def _activation_dtype(model: DiffusionLM) -> torch.dtype:
    """The dtype hidden states are stored in between blocks: the model's FP dtype (a bf16 model keeps bf16
    activations; a float32 model float32, as before)."""
    dt = model.final_norm.weight.dtype
    return dt if dt.is_floating_point else torch.float32


def _learned_block(block: DecoderBlock, index: int, h_in: torch.Tensor, fp_out: torch.Tensor,
                   weights: torch.Tensor, ctx, device, qcfg: QuantConfig, ccfg: CalibConfig,
                   stats: dict[str, Any], store: BlockStateStore | None, report: BlockReport, resumed: bool,
                   emit: ProgressFn, t0: float) -> None:
    """Install, train (or load), and checkpoint one block of a learned method."""
    if resumed:
        tensors, info = store.load(index)
        for k in ("init_loss", "final_loss", "epoch_losses", "time_s", "fallback"):
            setattr(report, k, info.get(k, getattr(report, k)))
        report.resumed = True
        install_fake_block(block, qcfg, None, rtn=bool(report.fallback))
        freeze_fp_parameters(block)
        params = learnable_parameters(block)
        if set(params) != set(tensors):
            raise CalibrationError(f"state_dir: block {index} state does not match the method's parameters; "
                                   f"delete the state directory to restart")
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(tensors[n].to(p.device))
        return
    install_fake_block(block, qcfg, stats)
    freeze_fp_parameters(block)
    eb = ccfg.eval_batch_size
    report.init_loss = _eval_loss(block, h_in, fp_out, weights, ctx, device, eb)
    try:
        if not math.isfinite(report.init_loss):
            raise FloatingPointError(f"non-finite loss ({report.init_loss}) before training")
        _train_block(block, index, h_in, fp_out, weights, ctx, device, qcfg, ccfg, report, emit)
    except FloatingPointError as e:
        if ccfg.nan_policy == "error":
            raise CalibrationError(f"block {index} ({qcfg.method}): {e}; lower the learning rate, check the "
                                   f"calibration data, or set nan_policy='rtn' to fall back to RTN for that "
                                   f"block") from None
        report.fallback = f"rtn: {e}"
        emit({"event": "fallback", "block": index, "reason": report.fallback})
        restore_fp_block(block)
        install_fake_block(block, qcfg, None, rtn=True)
    report.final_loss = _eval_loss(block, h_in, fp_out, weights, ctx, device, eb)
    report.time_s = time.perf_counter() - t0
    if store is not None:
        store.save(index, learnable_parameters(block), asdict(report))
