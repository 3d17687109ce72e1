"""Masked-diffusion training loop for the zoo models (CPU-friendly, seeded, config recorded).

Each optimiser step draws `sft_batch` SFT task examples (train split, answer window masked) and
`text_batch` text windows of `text_len` tokens (pre-training objective), and minimises
`sft_loss + text_weight * text_loss` (see objective.py) with AdamW, linear warm-up and cosine decay
to `min_lr_ratio * lr`. Everything random is drawn from generators seeded by `TrainConfig.seed`.

Run length: `steps > 0` runs exactly that many steps with the cosine over steps -- the same config,
data and thread count then reproduce the same weights. `minutes` (steps == 0) trains until the wall
budget is spent with the cosine over wall time, which adapts to a shared, variably loaded CPU; the
step count reached is recorded, and `steps=N` re-runs the same data order with a step-based cosine.

Boundary: takes a built model + tokenizer and returns a TrainResult; writing model directories and
cards is the recipe's job (recipes.py / card.py).
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from faircalib.configs import Config
from faircalib.data import ALL_FAMILIES, FAMILIES, sample_tasks
from faircalib.devices import BF16_SLOW, cpu_bf16_slowdown
from faircalib.errors import ConfigError
from faircalib.training.batches import TaskSampler, TextSampler, check_train_source, collate_sft, encode_task
from faircalib.training.objective import pretrain_loss, sft_loss


@dataclass(frozen=True)
class TrainConfig(Config):
    seed: int = 0
    steps: int = 0  # > 0: exactly this many steps, cosine over steps (bit-reproducible on one machine)
    minutes: float = 0.0  # used when steps == 0: train until this wall budget, cosine over wall time
    gen_length: int = 16  # SFT answer window (= the decoder's gen_length)
    sft_batch: int = 48
    text_batch: int = 8
    text_len: int = 64
    text_weight: float = 1.0
    text_source: str = "builtin:kjv:train"
    text_tokens: int = 2_000_000  # size of the tokenized text stream windows are drawn from
    pool_per_family: int = 40000
    families: tuple[str, ...] = FAMILIES  # SFT task families (faircalib.data: FAMILIES or LONG_FAMILIES)
    family_weights: dict = field(default_factory=dict)  # family -> relative sampling weight (default 1)
    lr: float = 2e-3
    min_lr_ratio: float = 0.05
    warmup_steps: int = 200
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.98)
    grad_clip: float = 1.0
    eps: float = 1e-3  # smallest mask ratio
    sft_weighting: str = "inv_t"  # "inv_t" (LLaDA SFT, CE/p) | "none" (mean CE over masked answer tokens)
    log_every: int = 50
    probe_every: int = 500  # cheap progress check on the *probe* split (0 = off)
    checkpoint_every: int = 1000  # steps between saves of the in-progress model (when a dir is given)
    threads: int = 1
    bf16_autocast: bool = True  # bf16 matmuls (fp32 master weights, fp32 loss); ~25% less CPU with AMX

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ConfigError(f"steps={self.steps}: must be >= 0 (0 = derive from minutes)")
        if self.steps == 0 and self.minutes <= 0:
            raise ConfigError("give steps > 0 or minutes > 0 (the training budget)")
        for name in ("gen_length", "sft_batch", "text_len", "threads", "text_tokens", "pool_per_family"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)}: must be >= 1")
        if self.text_batch < 0 or self.text_weight < 0:
            raise ConfigError("text_batch and text_weight must be >= 0")
        if not 0 < self.lr < 1:
            raise ConfigError(f"lr={self.lr}: must be in (0, 1)")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(f"min_lr_ratio={self.min_lr_ratio}: must be in [0, 1]")
        if self.sft_weighting not in ("inv_t", "none"):
            raise ConfigError(f"sft_weighting={self.sft_weighting!r}; allowed: inv_t, none")
        if not 0 < self.eps < 1:
            raise ConfigError(f"eps={self.eps}: must be in (0, 1)")
        object.__setattr__(self, "families", tuple(self.families))
        bad = [f for f in self.families if f not in ALL_FAMILIES]
        if bad or not self.families:
            raise ConfigError(f"families: unknown family {(bad or [''])[0]!r}; allowed: {', '.join(ALL_FAMILIES)}")
        bad = [f for f in self.family_weights if f not in self.families]
        if bad:
            raise ConfigError(f"family_weights: unknown family {bad[0]!r}; allowed: {', '.join(self.families)}")
        check_train_source(self.text_source)



@dataclass
class TrainResult:
    steps: int
    tokens_seen: int  # non-pad input tokens of all forward passes
    wall_s: float
    final: dict  # smoothed losses at the end
    history: list[dict]


def lr_at(step: int, progress: float, cfg: TrainConfig) -> float:
    """Linear warm-up over warmup_steps, then cosine from lr to min_lr_ratio * lr as `progress` (the
    fraction of the post-warm-up budget used, in steps or in wall time) goes 0 -> 1."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    frac = min(1.0, max(0.0, progress))
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + (cfg.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * frac))


def _param_groups(model, weight_decay: float) -> list[dict]:
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@torch.no_grad()
def one_shot_probe_accuracy(model, tokenizer, gen_length: int, n: int = 200, seed: int = 0,
                            families: tuple[str, ...] = FAMILIES) -> dict:
    """Progress proxy on the probe split: mask the whole answer window, take the argmax of every
    position in ONE forward pass; fraction of examples whose whole window (answer + EOS fill) is right.
    A lower bound on iterative decoding, used only to watch training (the cards use real decoding)."""
    was_training = model.training
    model.eval()
    items = [encode_task(tokenizer, ex, gen_length) for ex in sample_tasks(n, "probe", seed, families)]
    per_fam: dict[str, list[int]] = {}
    for i in range(0, len(items), 50):
        chunk = items[i:i + 50]
        b = collate_sft(chunk, tokenizer.pad_token_id)
        x = b.input_ids.clone()
        x[:, b.window_start:] = model.mask_token_id
        pred = model(x, attention_mask=b.attention_mask, window=(b.window_start, x.shape[1])).argmax(-1)
        ok = (pred == b.input_ids[:, b.window_start:]).all(dim=1)
        for it, o in zip(chunk, ok.tolist()):
            per_fam.setdefault(it.family, []).append(int(o))
    model.train(was_training)
    accs = {f: sum(v) / len(v) for f, v in per_fam.items()}
    return {"one_shot": round(sum(accs.values()) / len(accs), 4), **{f: round(a, 3) for f, a in accs.items()}}


def train(model, tokenizer, cfg: TrainConfig, log: Callable[[str], None] = print,
          checkpoint: Callable[[int], None] | None = None,
          progress: Callable[[dict], None] | None = None) -> TrainResult:
    """Train `model` in place. `checkpoint(step)` is called every cfg.checkpoint_every steps;
    `progress(event)` after every step with {"event": "train_step", "step", "total" (None in minutes
    mode), "elapsed_s", "budget_s" (minutes mode), "loss" (the SFT loss EMA)}."""
    torch.set_flush_denormal(True)
    torch.set_num_threads(cfg.threads)
    if cfg.bf16_autocast and (slow := cpu_bf16_slowdown()) > BF16_SLOW:
        log(f"warning: bf16_autocast=True, but a bf16 matmul is {slow:.0f}x slower than float32 on this CPU "
            "(no AVX512-BF16/AMX); bf16_autocast=False trains far faster here (float32 numerics, not the "
            "recorded recipe's)")
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    mask_id = model.mask_token_id
    tasks = TaskSampler(tokenizer, cfg.gen_length, cfg.seed, cfg.pool_per_family, families=cfg.families,
                        family_weights=cfg.family_weights or None)
    text = TextSampler(tokenizer, cfg.text_source, cfg.seed, cfg.text_tokens) if cfg.text_batch else None
    opt = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas)
    model.train()

    total = cfg.steps
    budget_s = cfg.minutes * 60.0
    tokens = 0
    history: list[dict] = []
    ema: dict[str, float] = {}
    t0 = time.perf_counter()
    t_log, tok_log = t0, 0
    t_warm = None  # wall time when warm-up ended (start of the cosine phase in minutes mode)
    step = 0
    while True:
        elapsed = time.perf_counter() - t0
        if total:
            if step >= total:
                break
            sched_frac = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
        else:  # wall-clock budget: the cosine runs over the time left after warm-up, then training stops
            if elapsed >= budget_s:
                break
            if step == cfg.warmup_steps:
                t_warm = elapsed
            sched_frac = 0.0 if t_warm is None else (elapsed - t_warm) / max(1e-9, budget_s - t_warm)
        lr = lr_at(step, sched_frac, cfg)
        for g in opt.param_groups:
            g["lr"] = lr
        batch = collate_sft(tasks.sample(cfg.sft_batch), tokenizer.pad_token_id)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16_autocast):
            out = sft_loss(model, batch, mask_id, cfg.eps, gen, cfg.sft_weighting)
        loss = out.loss
        step_tokens = int(batch.attention_mask.sum())
        stats = {"sft": float(out.loss.detach()), "sft_ce": out.ce_mean}
        if text is not None:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16_autocast):
                tout = pretrain_loss(model, text.sample(cfg.text_batch, cfg.text_len), mask_id, cfg.eps, gen)
            loss = loss + cfg.text_weight * tout.loss
            step_tokens += cfg.text_batch * cfg.text_len
            stats.update(text=float(tout.loss.detach()), text_ce=tout.ce_mean)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        tokens += step_tokens
        tok_log += step_tokens
        for k, v in stats.items():
            if v == v:  # skip nan (no masked tokens this step)
                ema[k] = v if k not in ema else 0.98 * ema[k] + 0.02 * v
        step += 1
        last = step == total or (not total and time.perf_counter() - t0 >= budget_s)
        if progress is not None:
            progress({"event": "train_step", "step": step, "total": total or None,
                      "elapsed_s": round(time.perf_counter() - t0, 2), "budget_s": None if total else budget_s,
                      "loss": ema.get("sft")})
        if step % cfg.log_every == 0 or last:
            now = time.perf_counter()
            rec = {"step": step, "lr": round(lr, 6), "tok_s": round(tok_log / (now - t_log)),
                   "elapsed_s": round(now - t0, 1), "tokens": tokens, **{k: round(v, 4) for k, v in ema.items()}}
            if cfg.probe_every and (step % cfg.probe_every == 0 or last):
                rec["probe"] = one_shot_probe_accuracy(model, tokenizer, cfg.gen_length, families=cfg.families)
            history.append(rec)
            log(json.dumps(rec))
            t_log, tok_log = now, 0
        if checkpoint is not None and cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and not last:
            checkpoint(step)
    model.eval()
    return TrainResult(steps=step, tokens_seen=tokens, wall_s=round(time.perf_counter() - t0, 1),
                       final={k: round(v, 4) for k, v in ema.items()}, history=history)


def save_history(result: TrainResult, path: str | Path) -> None:
    Path(path).write_text("\n".join(json.dumps(h) for h in result.history) + "\n")
