"""FAIR-Calib where it can matter: a powered, paired, resumable fidelity benchmark on a long-answer model.

    python benchmarks/fidelity.py --model zoo:long-llada --report benchmarks/results/fidelity_long-llada
    python benchmarks/fidelity.py --model zoo:long-llada --profile smoke --json /tmp/f.json --report /tmp/f

One run per model:
1. Bit setting: RTN's exact-match (EM) loss vs FP at w4a4, w4a3, w3a4, w3a3 on a *selection* set drawn from
   the probe split (never the held-out set); the mildest setting (in that order) where RTN loses >= 15
   points is chosen (if none does, the one where it loses most, and the JSON says so).
2. Rows, each (method, seed): fp, rtn, quarot, flatquant and faircalib (>= 5 seeds), and the ablations
   (>= 3 seeds): window_uniform (weight 1 on the last L positions, floor elsewhere, no prior shape),
   prior_floor1 (the prior with floor 1), frontier_only, reliability_only, schedule_uniform, schedule_late,
   and beyond the paper masked_flatquant / masked_faircalib (Stage II on masked windows,
   faircalib/calibrate/masked.py; uniform or prior weights). A seed fixes the Stage I commit sets, the
   calibration sample and the quantizer seed, identically for every method, so rows pair by seed.
3. Every row is evaluated on the same >= 1000 held-out examples of the model's long families: EM and
   never_agree per example (the model's own greedy default-policy trajectory), teacher-forced flips and
   KL(FP||Q) per example and per window position on the first n_diag examples (the FP teacher's
   trajectory; faircalib/diagnostics/positional.py).
4. Paired differences with a 95% crossed bootstrap CI over examples x seeds (faircalib/eval/stats.py) and
   a verdict per ordering: holds / reversed / not resolved, read from the CI only.

Data: probing uses the model's task source probe split, Stage II uses task-aligned sequences of the probe
split (faircalib.data.sample_task_sequences: each sequence ends on an answer window, so the prior's last-L
placement lands on answer positions), evaluation the heldout split: disjoint by hash. Defaults are the
method doc's (docs/method.md §6: prior a_min 1, a_max 4, gamma 2, beta 1, prob reliability, floor 0.1; FlatQuant
optimiser, 15 epochs) with the CPU-scale sizes of PROFILES; every value lands in `settings`.
Pre-registered: PROFILES["default"], the rows and the pairs below were committed before the first
FlatQuant-vs-FAIR-Calib run on the long models; do not change them after seeing a comparison.

Resumable and parallel: `--workers 2` runs two single-threaded worker processes that claim rows through
lock files; each finished row is merged into the JSON at once (under a file lock), and a rerun skips the
rows already in the JSON. `--budget-hours H` bounds an invocation's wall time the way the issue orders it:
the FlatQuant vs FAIR-Calib rows and the baselines always run; an ablation seed starts only if its rows,
at the median time of the calibrated rows finished so far, are expected to end within H (seeds are cut
whole, highest first, so every ablation keeps common seeds); settings.budget records the budget and the
first cut row. Evaluation decodes under bf16 autocast on CPU (the teacher too), calibration in
float32; `settings.eval_dtype` records it. On a CPU without bf16 units the bf16 GEMMs run as float32 GEMMs
on the bf16 operands, rounded to bf16 (faircalib/bf16.py: the same arithmetic up to the float32 summation
order, at float32 speed instead of ~6x slower; validated in benchmarks/results/bf16_emulation.json); each
row records the kernel it ran with in `bf16_kernel`.
The FP teacher's trajectory is also kept in benchmarks/results/fidelity_<model>_teacher_<kernel>.traj (+ .json
fingerprint; `--teacher-cache`; <kernel> is bf16 (native bf16 units), bf16emu (the emulation) or fp32): a
fresh machine reuses it instead of decoding again only when the weights, held-out set, decoding, eval
batch, bf16 kernel and torch version all match. One copy per kernel, because the hosts this runs on
alternate between the two kinds of CPU and each kind would otherwise overwrite the other's copy. The Stage
I priors of each seed (5-6 min of probing per seed and model on a 2-core AVX2 host) are kept the same
way, next to it in benchmarks/results/fidelity_<model>_priors_<kernel>/s<seed>/ (PriorCache: weights,
probe config, prior variants, model dtype, kernel and torch version must match).
"""
from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict
from pathlib import Path

import torch

import faircalib
from faircalib.bf16 import KERNEL_EMULATED, KERNEL_NATIVE, bf16_autocast, bf16_kernel, emulate_bf16_here
from faircalib.calibrate import CalibConfig
from faircalib.data import exact_match, families_of, sample_tasks
from faircalib.diagnostics.positional import never_agree_per_sequence, positional_errors
from faircalib.diffusion import DecodeConfig, decode_text, generate, resolve_config
from faircalib.diffusion.trajectory import Trajectory
from faircalib.eval.stats import mean_std, paired_bootstrap
from faircalib.pipeline import MethodConfig, run_method
from faircalib.probe import PositionPrior, PriorSettings, ProbeConfig, probe_priors

EVAL_SEED = 20261201  # the held-out examples never change with seeds
SELECT_SEED = 7
BIT_CANDIDATES = ("w4a4", "w4a3", "w3a4", "w3a3")
RTN_LOSS_POINTS = 15.0
METRICS = {"em": 1, "flips": -1, "never_agree": -1, "kl": -1}  # direction: +1 higher is better

RESULTS = Path(__file__).resolve().parent / "results"
PROFILES = {
    # CPU scale for two single-threaded workers on a 2-core machine. Sized for ~2.5 h a model, it measured
    # 12.0 / 13.3 h of single-core row time on long-dream / long-llada as run (partly on emulated-bf16 hosts,
    # ~4x slower a row); --estimate gives 3.5 / 4.0 h on two workers with native bf16. --budget-hours cuts
    # ablation seeds to fit a budget
    "default": {"n_eval": 1000, "n_diag": 250, "n_select": 250, "probe_n": 256, "probe_batch": 32,
                "calib_n": 64, "calib_seq_len": 256, "epochs": 15, "main_seeds": 5, "ablation_seeds": 3,
                "eval_batch": 50, "bf16_eval": True, "n_boot": 4000},
    "smoke": {"n_eval": 12, "n_diag": 6, "n_select": 8, "probe_n": 8, "probe_batch": 4, "calib_n": 4,
              "calib_seq_len": 64, "epochs": 1, "main_seeds": 2, "ablation_seeds": 1, "eval_batch": 6,
              "bf16_eval": False, "n_boot": 200},
}

# row name -> how it is built (method registry names; ablation rows are variants of them)
PRIOR_VARIANTS = {"faircalib": PriorSettings(), "frontier_only": PriorSettings(beta=0.0),
                  "reliability_only": PriorSettings(schedule="none"),
                  "schedule_uniform": PriorSettings(schedule="uniform"),
                  "schedule_late": PriorSettings(schedule="late")}
MAIN_ROWS = ("flatquant", "faircalib")
BASELINE_ROWS = ("fp", "rtn", "quarot")
SEEDLESS_ROWS = ("fp", "rtn")  # deterministic: their one row pairs with every seed of the other side
ABLATION_ROWS = ("window_uniform", "prior_floor1", "frontier_only", "reliability_only", "schedule_uniform",
                 "schedule_late", "masked_flatquant", "masked_faircalib")
# (a, b): delta = a - b, the claim "a is better than b"
PAIRS = [("faircalib", "flatquant"), ("flatquant", "rtn"), ("quarot", "rtn"), ("flatquant", "quarot"),
         ("faircalib", "rtn")] + [(r, "flatquant") for r in ABLATION_ROWS] + [
         ("faircalib", "window_uniform"), ("faircalib", "schedule_late"), ("faircalib", "schedule_uniform"),
         ("faircalib", "frontier_only"), ("faircalib", "reliability_only"), ("schedule_uniform", "schedule_late"),
         ("masked_faircalib", "faircalib"), ("masked_faircalib", "masked_flatquant")]


def log(msg: str) -> None:
    print(f"[fidelity {os.getpid()} {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------- setup
def load_model(source: str):
    """-> (model, tokenizer, decoding dict, task source of the model's families)."""
    if source.startswith("tiny:"):  # tests / smoke: a random tiny model with the long tasks' tokenizer
        from faircalib.models import load_dllm, tiny_model

        tok = load_dllm("zoo:tiny-llada").tokenizer
        arch = source.split(":", 1)[1]
        model = tiny_model(arch, seed=0, vocab_size=len(tok), mask_token_id=tok.mask_token_id,
                           pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        return model.eval(), tok, {"gen_length": 48, "steps": 48}, "builtin:longtasks"
    from faircalib.models import load_dllm

    loaded = load_dllm(source)
    card = json.loads((Path(loaded.path) / "model_card.json").read_text())
    fams = tuple(card["train_config"].get("families") or ())
    task_source = "builtin:longtasks" if set(fams) == set(families_of("builtin:longtasks")) else "builtin:tasks"
    return loaded.model.eval(), loaded.tokenizer, dict(card["decoding"]), task_source


class Context:
    """Everything a worker needs, rebuilt deterministically in every process (cheap except the FP teacher
    decode, which is cached in the work directory)."""

    def __init__(self, model_src: str, prof: dict, work: Path):
        self.model_src, self.prof, self.work = model_src, prof, work
        self.model, self.tok, self.decoding, self.task_source = load_model(model_src)
        self.L = int(self.decoding["gen_length"])
        self.dcfg = resolve_config(self.model, DecodeConfig.from_dict(
            {k: v for k, v in self.decoding.items() if k != "seed"}))
        fams = families_of(self.task_source)
        self.eval_tasks = sample_tasks(prof["n_eval"], "heldout", EVAL_SEED, fams)
        self.select_tasks = sample_tasks(prof["n_select"], "probe", SELECT_SEED, fams)
        self.emulate = bool(prof["bf16_eval"]) and emulate_bf16_here()  # no bf16 units: float32 GEMMs
        self.kernel = bf16_kernel(self.emulate) if prof["bf16_eval"] else "float32"
        self._teacher, self._weights_sha = None, None
        self.cache_path: Path | None = None  # persistent teacher copy (main() sets it; see TeacherCache)

    def prompts(self, tasks) -> list[torch.Tensor]:
        return [torch.tensor(self.tok(t.prompt, add_special_tokens=False)["input_ids"], dtype=torch.long)
                for t in tasks]

    def decode(self, model, tasks, record=("top1",)) -> Trajectory:
        prompts, bs, parts = self.prompts(tasks), self.prof["eval_batch"], []
        with torch.no_grad(), self.amp():
            for i in range(0, len(prompts), bs):
                parts.append(generate(model, prompts[i:i + bs], config=self.dcfg, record=record))
        return concat_trajectories(parts)

    def amp(self):
        """The evaluation's numerics: bf16 autocast (pre-registered profile) or float32."""
        return bf16_autocast(self.emulate) if self.prof["bf16_eval"] else nullcontext()

    def teacher(self, records: bool = False) -> Trajectory:
        """The FP teacher's greedy default-policy trajectory on the held-out prompts, cached in the work
        directory and, when `cache_path` is set, in a persistent copy without records (see TeacherCache).
        records=True (the fp row's never_agree) needs the per-step top-1 record, which only a decode has."""
        if self._teacher is None or (records and "top1" not in self._teacher.records):
            path = self.work / "teacher.traj"
            with locked(self.work / "teacher.lock"):
                have = Trajectory.load(path) if path.exists() else None
                if have is None and self.cache_path is not None:
                    have = TeacherCache(self.cache_path).load(self)
                    if have is not None:
                        log(f"FP teacher trajectory from {self.cache_path} (same weights, kernel and settings)")
                        have.save(path)
                if have is None or (records and "top1" not in have.records):
                    log(f"FP teacher decode of {len(self.eval_tasks)} held-out prompts")
                    have = self.decode(self.model, self.eval_tasks)
                    have.save(path)
                    if self.cache_path is not None:
                        TeacherCache(self.cache_path).save(self, have)
            self._teacher = have
        return self._teacher

    def fingerprint(self) -> dict:
        """What the teacher trajectory depends on: weights, held-out set, decoding, kernel and torch."""
        if self._weights_sha is None:  # the weights never change within a Context: hash them once
            h = hashlib.sha256()
            for name, t in sorted(self.model.state_dict().items()):
                h.update(name.encode())
                h.update(t.detach().contiguous().cpu().view(-1).view(torch.uint8).numpy().tobytes())
            self._weights_sha = h.hexdigest()
        return {"model": self.model_src, "weights_sha256": self._weights_sha, "n_eval": self.prof["n_eval"],
                "eval_seed": EVAL_SEED, "task_source": self.task_source, "decoding": self.dcfg.to_dict(),
                "eval_batch": self.prof["eval_batch"], "bf16_eval": bool(self.prof["bf16_eval"]),
                "kernel": self.kernel, "torch": torch.__version__}

    def probe_cfg(self, seed: int, settings: PriorSettings = PriorSettings()) -> ProbeConfig:
        return ProbeConfig(prompts=f"{self.task_source}:probe", n_samples=self.prof["probe_n"], steps=self.L,
                           window=self.L, batch_size=self.prof["probe_batch"], seed=seed, prior=settings)

    def priors(self, seed: int) -> dict[str, PositionPrior]:
        """Every prior variant of one seed from ONE probe pass (cached on disk per seed, in the work
        directory and, when `cache_path` is set, in a persistent copy: see PriorCache)."""
        d = self.work / f"priors_s{seed}"
        keep = PriorCache(priors_cache_dir(self.cache_path) / f"s{seed}") if self.cache_path is not None else None
        with locked(self.work / f"priors_s{seed}.lock"):
            if not (d / "done").exists() and keep is not None and keep.load(self, seed, d):
                log(f"Stage I priors of seed {seed} from {keep.dir} (same weights, probe settings and kernel)")
            if not (d / "done").exists():
                log(f"Stage I probe, seed {seed} ({self.prof['probe_n']} prompts, T = L = {self.L})")
                pri = probe_priors(self.model, self.tok, None, self.probe_cfg(seed), PRIOR_VARIANTS)
                for name, p in pri.items():
                    p.save(d / name)
                (d / "done").write_text("ok")
            if keep is not None and not keep.matches(self, seed):
                keep.save(self, seed, d)
        return {name: PositionPrior.load(d / name) for name in PRIOR_VARIANTS}

    def probe_fingerprint(self, seed: int) -> dict:
        """What one seed's Stage I priors depend on: weights, probe config, variants, dtype, kernel, torch."""
        return {"model": self.model_src, "weights_sha256": self.fingerprint()["weights_sha256"],
                "probe": self.probe_cfg(seed).to_dict(),
                "variants": {n: asdict(v) for n, v in sorted(PRIOR_VARIANTS.items())},
                "dtype": str(next(self.model.parameters()).dtype), "kernel": self.kernel, "torch": torch.__version__}


class TeacherCache:
    """A persistent copy of the FP teacher's trajectory (core tensors, no records: ~1.5 MB at 1000 x 64),
    so a fresh machine skips the ~20-40 min teacher decode. It is used only when its fingerprint (weights
    hash, held-out set, decoding, eval batch, bf16 kernel, torch version) equals the current one; any
    difference means a fresh decode, which then replaces the copy. Decoding is deterministic for a fixed
    fingerprint, so a hit gives the trajectory the decode would have produced on this machine."""

    FORMAT = "faircalib.fidelity-teacher/1"

    def __init__(self, path: Path):
        self.path, self.meta = Path(path), Path(str(path) + ".json")

    def load(self, ctx: Context) -> Trajectory | None:
        if not (self.path.exists() and self.meta.exists()):
            return None
        meta = json.loads(self.meta.read_text())
        if meta.get("format") != self.FORMAT or meta.get("fingerprint") != ctx.fingerprint():
            log(f"teacher cache {self.path} was made with other weights/settings/kernel: decoding afresh")
            return None
        return Trajectory.load(self.path)

    def save(self, ctx: Context, traj: Trajectory) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        Trajectory(traj.prompt_ids, traj.prompt_mask, traj.tokens, traj.commit_step, traj.config,
                   traj.mask_token_id, traj.pad_token_id, {}).save(self.path)
        self.meta.write_text(json.dumps({"format": self.FORMAT, "fingerprint": ctx.fingerprint()}, indent=1) + "\n")


class PriorCache:
    """A persistent copy of one seed's Stage I priors (every PRIOR_VARIANTS entry, ~0.1 MB each), so a fresh
    machine skips the probe. Used only on an exact fingerprint match (Context.probe_fingerprint); a fresh
    probe replaces a mismatching copy."""

    FORMAT = "faircalib.fidelity-priors/1"

    def __init__(self, directory: Path):
        self.dir = Path(directory)
        self.meta = self.dir / "fingerprint.json"

    def matches(self, ctx: Context, seed: int) -> bool:
        if not self.meta.exists():
            return False
        meta = json.loads(self.meta.read_text())
        return meta.get("format") == self.FORMAT and meta.get("fingerprint") == ctx.probe_fingerprint(seed) \
            and all((self.dir / n / "prior.json").exists() for n in PRIOR_VARIANTS)

    def load(self, ctx: Context, seed: int, work_dir: Path) -> bool:
        """Copy the priors into `work_dir` (marked done) if the fingerprint matches; False otherwise."""
        if not self.matches(ctx, seed):
            if self.meta.exists():
                log(f"prior cache {self.dir} was made with other weights/settings/kernel: probing afresh")
            return False
        for n in PRIOR_VARIANTS:
            PositionPrior.load(self.dir / n).save(work_dir / n)
        (work_dir / "done").write_text("ok")
        return True

    def save(self, ctx: Context, seed: int, work_dir: Path) -> None:
        for n in PRIOR_VARIANTS:
            PositionPrior.load(work_dir / n).save(self.dir / n)
        self.meta.write_text(json.dumps({"format": self.FORMAT, "fingerprint": ctx.probe_fingerprint(seed)},
                                        indent=1) + "\n")


def concat_trajectories(parts: list[Trajectory]) -> Trajectory:
    """Concatenate per-batch trajectories (prompts re-padded on the left to the widest batch)."""
    P = max(p.prompt_len for p in parts)

    def pad_left(x: torch.Tensor, value: int) -> torch.Tensor:
        return torch.nn.functional.pad(x, (P - x.shape[1], 0), value=value)

    first = parts[0]
    return Trajectory(torch.cat([pad_left(p.prompt_ids, p.pad_token_id) for p in parts]),
                      torch.cat([pad_left(p.prompt_mask, 0) for p in parts]),
                      torch.cat([p.tokens for p in parts]), torch.cat([p.commit_step for p in parts]),
                      first.config, first.mask_token_id, first.pad_token_id,
                      {k: torch.cat([p.records[k] for p in parts], dim=1) for k in first.records})


@contextmanager
def locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# ------------------------------------------------------------------------------------------- bits
def select_bits(ctx: Context) -> dict:
    """RTN's EM loss per candidate on the probe-split selection set -> {"losses", "chosen", "reason"}."""
    fp_em = em_of(ctx, ctx.decode(ctx.model, ctx.select_tasks, record=None), ctx.select_tasks)
    losses = {}
    for bits in BIT_CANDIDATES:
        q, _ = run_method(ctx.model, ctx.tok, MethodConfig(method="rtn", bits=bits))
        em = em_of(ctx, ctx.decode(q, ctx.select_tasks, record=None), ctx.select_tasks)
        losses[bits] = {"fp_em": float(fp_em.mean()), "rtn_em": float(em.mean()),
                        "loss_points": 100 * float(fp_em.mean() - em.mean())}
        log(f"bits {bits}: FP EM {fp_em.mean():.3f}, RTN EM {em.mean():.3f}")
    ok = [b for b in BIT_CANDIDATES if losses[b]["loss_points"] >= RTN_LOSS_POINTS]
    if ok:
        chosen, reason = ok[0], f"mildest setting where RTN loses >= {RTN_LOSS_POINTS:g} EM points"
    else:
        chosen = max(BIT_CANDIDATES, key=lambda b: losses[b]["loss_points"])
        reason = f"no setting made RTN lose {RTN_LOSS_POINTS:g} points; chose the largest loss"
    return {"set": f"{ctx.task_source}:probe", "n": len(ctx.select_tasks), "seed": SELECT_SEED,
            "losses": losses, "chosen": chosen, "reason": reason}


def em_of(ctx: Context, traj: Trajectory, tasks) -> torch.Tensor:
    preds = decode_text(ctx.tok, traj)
    return torch.tensor([float(exact_match(p, t.answer)) for p, t in zip(preds, tasks)], dtype=torch.float64)


# ------------------------------------------------------------------------------------------- rows
def plan(prof: dict) -> list[str]:
    """Row keys "name@seed" in run order: the pre-registered main pair first (interleaved by seed), then the
    baselines, then the ablations seed by seed (so a budget cut removes ablation seeds first)."""
    rows = [f"{m}@{s}" for s in range(prof["main_seeds"]) for m in MAIN_ROWS]
    rows += ["fp@0", "rtn@0", "quarot@0"]
    rows += [f"{a}@{s}" for s in range(prof["ablation_seeds"]) for a in ABLATION_ROWS]
    return rows


def row_cost_s(rows: dict, kernel: str | None = None) -> float | None:
    """The median wall time of one calibrated row (main or ablation) among the finished `rows`, preferring
    rows that ran with `kernel` (hosts alternate between native and emulated bf16, ~4x apart); None if no
    calibrated row has finished yet."""
    timed = [r for r in rows.values() if r["name"] in MAIN_ROWS + ABLATION_ROWS and r.get("row_time_s")]
    same = [r for r in timed if r.get("bf16_kernel") == kernel]
    times = sorted(r["row_time_s"] for r in (same or timed))
    if not times:
        return None
    mid = len(times) // 2
    return float(times[mid] if len(times) % 2 else (times[mid - 1] + times[mid]) / 2)


def estimate_plan(prof: dict, rows: dict, workers: int, kernel: str | None = None) -> dict:
    """Wall-time estimate of the plan from the rows finished so far: every calibrated row (main, QuaRot,
    ablation) at row_cost_s(), fp/rtn at their own time where finished with `kernel` (else the same cost, an
    upper bound: they calibrate nothing), spread evenly over `workers` single-threaded processes (the
    teacher decode and bit selection are not counted)."""
    cost = row_cost_s(rows, kernel)
    keys = plan(prof)
    if cost is None:
        return {"rows_done": sum(k in rows for k in keys), "rows_left": sum(k not in rows for k in keys),
                "row_cost_s": None, "reason": "no calibrated row has finished yet: nothing to estimate from"}

    def t(k: str) -> float:
        r = rows.get(k)
        own = r is not None and r["name"] in SEEDLESS_ROWS and r.get("bf16_kernel") == kernel
        return float(r["row_time_s"]) if own else cost  # cost bounds fp/rtn (no calibration) from above

    w = max(1, workers)
    left = [k for k in keys if k not in rows]
    return {"rows_done": len(keys) - len(left), "rows_left": len(left), "row_cost_s": round(cost, 1),
            "kernel": kernel, "workers": w, "hours_left": round(sum(map(t, left)) / w / 3600, 2),
            "hours_full_plan": round(sum(map(t, keys)) / w / 3600, 2),
            "hours_without_ablations": round(sum(t(k) for k in keys if k.split("@")[0] not in ABLATION_ROWS)
                                             / w / 3600, 2)}


def budget_cut(key: str, rows: dict, started: set[str], workers: int, deadline: float, now: float,
               kernel: str | None = None) -> str | None:
    """Whether the time budget cuts row `key` (None: run it; otherwise why not). The issue's rule: cut
    ablation seeds first, never the FlatQuant vs FAIR-Calib pair, so main and baseline rows always run. An
    ablation seed is cut whole, and only before any of its rows has started (`started`: keys finished or
    claimed), so every ablation keeps the same seeds and still pairs with the others; a seed is started only
    if all its remaining rows are expected to finish, spread over `workers`, before `deadline` (epoch s)."""
    name, seed = key.split("@")[0], int(key.split("@")[1])
    if name not in ABLATION_ROWS:
        return None
    seed_keys = [f"{a}@{seed}" for a in ABLATION_ROWS]
    if any(k in rows or k in started for k in seed_keys):
        return None
    cost = row_cost_s(rows, kernel)
    if cost is None:
        return None
    need = len(seed_keys) * cost / max(1, workers)
    if now + need <= deadline:
        return None
    return (f"ablation seed {seed} and later cut by the time budget: its {len(seed_keys)} rows need ~{need / 60:.0f} "
            f"min on {workers} worker(s) at {cost:.0f} s a row, {max(0.0, deadline - now) / 60:.0f} min are left")


def quantize_row(ctx: Context, name: str, seed: int, bits: str):
    """-> (quantized model, info) for one row (the method registry's names; ablations as variants)."""
    masking = "window" if name.startswith("masked_") else "none"
    name = name.removeprefix("masked_")
    calib = CalibConfig(data=f"{ctx.task_source}:probe", n=ctx.prof["calib_n"], seq_len=ctx.prof["calib_seq_len"],
                        data_seed=seed, layout="answer", window=ctx.L, masking=masking, epochs=ctx.prof["epochs"])
    base = dict(bits=bits, seed=seed)
    if name in ("fp", "rtn"):
        return run_method(ctx.model, ctx.tok, MethodConfig(method=name, bits=bits))
    if name in ("quarot", "flatquant"):
        return run_method(ctx.model, ctx.tok, MethodConfig(method=name, calibration=calib, **base))
    priors = ctx.priors(seed)
    variant = {"prior_floor1": "faircalib", "window_uniform": "faircalib"}.get(name, name)
    prior = priors[variant]
    floor = 1.0 if name == "prior_floor1" else CalibConfig().floor
    if name == "window_uniform":  # ablation (a): the same alignment with a flat curve
        prior = PositionPrior(torch.ones(1, ctx.L, dtype=torch.float64), torch.zeros(1, dtype=torch.long),
                              prior.settings, {**prior.meta, "ablation": "window_uniform (flat curve)"})
    cfg = MethodConfig(method="faircalib", probe=ctx.probe_cfg(seed, prior.settings),
                       calibration=calib.replace(floor=floor), **base)
    q, info = run_method(ctx.model, ctx.tok, cfg, prior=prior)
    info["prior_curve"] = prior.curve.tolist()
    return q, info


def run_row(ctx: Context, key: str, bits: str) -> dict:
    name, seed = key.split("@")[0], int(key.split("@")[1])
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    q, info = quantize_row(ctx, name, seed, bits)
    t_q = time.perf_counter() - t0
    teacher = ctx.teacher()
    traj = ctx.teacher(records=True) if name == "fp" else ctx.decode(q, ctx.eval_tasks)
    em = em_of(ctx, traj, ctx.eval_tasks)
    never = never_agree_per_sequence(traj.records["top1"], traj.commit_step, traj.tokens)
    nd = ctx.prof["n_diag"]
    with ctx.amp():
        pos = positional_errors(q, ctx.model, teacher.select(slice(0, nd)))
    fams: dict[str, list[float]] = {}
    for t, e in zip(ctx.eval_tasks, em.tolist()):
        fams.setdefault(t.family, []).append(e)
    row = {"key": key, "name": name, "seed": seed, "bits": bits if name != "fp" else "fp",
           "em": [int(x) for x in em.tolist()], "never_agree": [round(x, 5) for x in never.tolist()],
           "flips": pos["flips"].tolist(), "kl": [round(x, 7) for x in pos["kl"].tolist()],
           "flip_by_pos": [round(x, 6) for x in pos["flip_by_pos"].tolist()],
           "kl_by_pos": [round(x, 7) for x in pos["kl_by_pos"].tolist()],
           "em_per_family": {f: sum(v) / len(v) for f, v in sorted(fams.items())},
           "quantize_time_s": round(t_q, 1), "row_time_s": round(time.perf_counter() - t0, 1),
           "block_losses": info.get("block_losses"), "prior_curve": info.get("prior_curve"),
           "calib_data": info.get("calib_data"), "bf16_kernel": ctx.kernel}
    log(f"{key}: EM {em.mean():.3f}, flips/seq {pos['flips'].double().mean():.2f}, KL {pos['kl'].mean():.4f} "
        f"({row['row_time_s']:.0f} s)")
    return row


# ------------------------------------------------------------------------------------------- summary
def _matrix(rows: list[dict], name: str, metric: str) -> tuple[list[int], torch.Tensor] | None:
    rs = sorted((r for r in rows if r["name"] == name), key=lambda r: r["seed"])
    if not rs:
        return None
    return [r["seed"] for r in rs], torch.tensor([[float("nan") if v is None else v for v in r[metric]]
                                                  for r in rs], dtype=torch.float64)


def summarize(result: dict, n_boot: int) -> None:
    """Fill result["methods"] and result["paired"] from result["rows"] (in place)."""
    rows = list(result["rows"].values())
    names = sorted({r["name"] for r in rows})
    methods = {}
    for n in names:
        rs = [r for r in rows if r["name"] == n]
        methods[n] = {m: mean_std([sum(r[m]) / len(r[m]) for r in rs]) for m in METRICS}
        methods[n]["em_per_family"] = {f: sum(r["em_per_family"][f] for r in rs) / len(rs)
                                       for f in rs[0]["em_per_family"]}
        methods[n]["seeds"] = sorted(r["seed"] for r in rs)
        methods[n]["flip_by_pos"] = [sum(v) / len(rs) for v in zip(*(r["flip_by_pos"] for r in rs))]
        methods[n]["kl_by_pos"] = [sum(v) / len(rs) for v in zip(*(r["kl_by_pos"] for r in rs))]
    paired = {}
    for a, b in PAIRS:
        if a not in methods or b not in methods:
            continue
        entry = {}
        for metric, direction in METRICS.items():
            sa, ma = _matrix(rows, a, metric)
            sb, mb = _matrix(rows, b, metric)
            if a not in SEEDLESS_ROWS and b not in SEEDLESS_ROWS:  # pair on the common seeds
                common = sorted(set(sa) & set(sb))
                if not common:
                    continue
                ma = ma[[sa.index(s) for s in common]]
                mb = mb[[sb.index(s) for s in common]]
            ci = paired_bootstrap(mb, ma, direction=direction, n_boot=n_boot)  # delta = a - b
            entry[metric] = ci.to_dict()
        if entry:
            paired[f"{a}_vs_{b}"] = entry
    # every method's difference from FP (for the delta-vs-FP plot; no claim attached)
    for n in names:
        if n == "fp" or "fp" not in methods:
            continue
        methods[n]["delta_vs_fp"] = {}
        for metric, direction in METRICS.items():
            _, mn = _matrix(rows, n, metric)
            _, mf = _matrix(rows, "fp", metric)
            ci = paired_bootstrap(mf, mn, direction=direction, n_boot=n_boot).to_dict()
            ci.pop("verdict")
            methods[n]["delta_vs_fp"][metric] = ci
    result["methods"], result["paired"] = methods, paired
    result["position_analysis"] = _report_module().position_analysis(result)


def _report_module():
    """benchmarks/fidelity_report.py (a sibling script, not a package module), importable once."""
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    import fidelity_report

    return fidelity_report


def save_result(json_path: Path, result: dict) -> None:
    """Replace the result JSON atomically (callers hold its lock)."""
    tmp = json_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, json_path)


def write_row(json_path: Path, row: dict, n_boot: int) -> None:
    with locked(json_path.with_suffix(".lock")):
        result = json.loads(json_path.read_text())
        result["rows"][row["key"]] = row
        summarize(result, n_boot)
        save_result(json_path, result)


def note_budget_cut(json_path: Path, key: str, reason: str) -> None:
    """Record in settings.budget where the time budget cut the plan (the first cut row and why)."""
    with locked(json_path.with_suffix(".lock")):
        result = json.loads(json_path.read_text())
        budget = result["settings"].setdefault("budget", {})
        if budget.get("cut_at") is None:
            log(reason)
            budget.update(cut_at=key, reason=reason)
            save_result(json_path, result)


def start_budget(json_path: Path, hours: float | None, workers: int, t0: float) -> float | None:
    """Set this invocation's time budget in settings.budget (None: the full pre-registered plan) -> the
    deadline in epoch seconds. Each invocation (a resume too) gets its own budget, counted from its start
    `t0` (epoch s; the bit selection and the teacher decode count against it)."""
    with locked(json_path.with_suffix(".lock")):
        result = json.loads(json_path.read_text())
        if hours is None:
            if result["settings"].pop("budget", None) is not None:  # an earlier invocation's budget
                save_result(json_path, result)
            return None
        deadline = t0 + hours * 3600.0
        result["settings"]["budget"] = {
            "hours": hours, "workers": workers, "cut_at": None,
            "deadline_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(deadline)),
            "rule": "main and baseline rows always run; ablation seeds are cut whole, highest seed first"}
        save_result(json_path, result)
    return deadline


# ------------------------------------------------------------------------------------------- driver
def log_kernel(ctx: Context) -> None:
    """Say which bf16 GEMM the evaluation runs with (rows record it as `bf16_kernel`)."""
    if ctx.emulate:
        from faircalib.devices import cpu_bf16_slowdown

        log(f"this CPU emulates bf16 (a bf16 matmul is {cpu_bf16_slowdown():.0f}x slower than float32, "
            f"{torch.backends.cpu.get_cpu_capability()}): bf16 autocast runs its GEMMs as {ctx.kernel}")


def worker(args) -> None:
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    prof = PROFILES[args.profile]
    json_path, work = Path(args.json), Path(args.work)
    ctx = Context(args.model, prof, work)
    ctx.cache_path = teacher_cache_path(args.teacher_cache, args.model, stem_of(args.model), RESULTS,
                                        ctx.kernel)
    bits = json.loads(json_path.read_text())["settings"]["bits"]
    claims = work / "claims"
    claims.mkdir(parents=True, exist_ok=True)
    for key in plan(prof):
        rows = json.loads(json_path.read_text())["rows"]
        if key in rows:
            continue
        if args.deadline is not None:
            cut = budget_cut(key, rows, {p.name for p in claims.iterdir()}, args.workers, args.deadline,
                             time.time(), ctx.kernel)
            if cut:
                note_budget_cut(json_path, key, cut)
                break  # the plan lists ablation seeds in order: every later row is cut too
        try:
            fd = os.open(claims / key, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            continue
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        write_row(json_path, run_row(ctx, key, bits), prof["n_boot"])


def settings_of(args, prof: dict, ctx: Context, selection: dict) -> dict:
    git = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parent).stdout.strip()
    return {"model": args.model, "bits": selection["chosen"], "bit_selection": selection, "profile": args.profile,
            **prof, "window": ctx.L, "decoding": ctx.dcfg.to_dict(), "task_source": ctx.task_source,
            "eval_set": f"{ctx.task_source}:heldout seed {EVAL_SEED}", "probe_set": f"{ctx.task_source}:probe",
            "calibration": f"CalibConfig(data={ctx.task_source}:probe, layout=answer, n={prof['calib_n']}, "
                           f"seq_len={prof['calib_seq_len']}, window={ctx.L}, data_seed=row seed); masked rows: "
                           f"masking=window",
            "prior_defaults": PriorSettings().to_dict(), "floor": CalibConfig().floor,
            "eval_dtype": "bfloat16 autocast (CPU)" if prof["bf16_eval"] else "float32",
            "calibration_dtype": "float32", "pairs": [f"{a}_vs_{b}" for a, b in PAIRS],
            "ci": "95% percentile crossed bootstrap over examples x seeds (faircalib/eval/stats.py)",
            "code_version": faircalib.__version__, "git_commit": git,
            "machine": f"{os.cpu_count()} CPUs, torch {torch.__version__}, {args.workers} worker process(es) x 1 thread"}


def find_result(results: Path, stem: str, profile: str) -> Path | None:
    """The model's result JSON of `profile` in `results`, if one exists. Only result files count: the teacher
    cache's fingerprint (fidelity_<stem>_teacher_<kernel>.traj.json) matches the same glob but has no settings/rows."""
    for p in sorted(results.glob(f"fidelity_{stem}_*.json")):
        doc = json.loads(p.read_text())
        if isinstance(doc.get("settings"), dict) and "rows" in doc and doc["settings"].get("profile") == profile:
            return p
    return None


def stem_of(model: str) -> str:
    """The file-name stem of a model source: zoo:long-dream -> long-dream, tiny:llada -> tiny_llada."""
    return model.removeprefix("zoo:").replace("/", "_").replace(":", "_")


def priors_cache_dir(teacher_cache: Path) -> Path:
    """Where the persistent Stage I priors live, beside the teacher copy: fidelity_<m>_teacher<rest>.traj ->
    fidelity_<m>_priors<rest>/ (e.g. _teacher_bf16.traj -> _priors_bf16/; any other name N -> N.priors/)."""
    m = re.fullmatch(r"(.*)_teacher(.*)\.traj", teacher_cache.name)
    return teacher_cache.with_name(f"{m[1]}_priors{m[2]}" if m else teacher_cache.name + ".priors")


def kernel_tag(kernel: str) -> str:
    """The short file-name tag of a kernel label (Context.kernel): bf16, bf16emu or fp32."""
    tags = {KERNEL_NATIVE: "bf16", KERNEL_EMULATED: "bf16emu", "float32": "fp32"}
    if kernel not in tags:
        raise ValueError(f"unknown bf16 kernel label {kernel!r}: add a file-name tag for it to kernel_tag()")
    return tags[kernel]


def teacher_cache_path(opt: str, model: str, stem: str, results: Path, kernel: str) -> Path | None:
    """The persistent teacher copy: auto -> results/fidelity_<stem>_teacher_<kernel tag>.traj (one per kernel),
    none (or auto for a tiny: test model) -> no copy, anything else -> that path, whatever the kernel."""
    if opt == "none" or (opt == "auto" and model.startswith("tiny:")):
        return None
    return results / f"fidelity_{stem}_teacher_{kernel_tag(kernel)}.traj" if opt == "auto" else Path(opt)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--json", default=None,
                    help="output JSON (default benchmarks/results/fidelity_<model>_<bits>.json; resumed if it exists)")
    ap.add_argument("--report", default=None, help="report directory (HTML + PNG)")
    ap.add_argument("--profile", default="default", choices=sorted(PROFILES))
    ap.add_argument("--bits", default="auto", help="auto (the RTN-loss rule) or a setting, e.g. w4a3")
    ap.add_argument("--workers", type=int, default=2, help="single-threaded worker processes")
    ap.add_argument("--work", default=None, help="scratch directory (teacher trajectory, priors, row claims)")
    ap.add_argument("--teacher-cache", default="auto",
                    help="persistent FP teacher trajectory: auto (benchmarks/results/"
                         "fidelity_<model>_teacher_<kernel>.traj for zoo/local models, one per bf16 kernel; none "
                         "for tiny: test models), none, or a path; the Stage I priors are kept beside it "
                         "(X_teacher<rest>.traj -> X_priors<rest>/s<seed>/)")
    ap.add_argument("--budget-hours", type=float, default=None,
                    help="wall-clock budget of this invocation: ablation seeds that would not finish in it are "
                         "cut (whole, highest seed first; estimated from the rows finished so far); the FlatQuant vs "
                         "FAIR-Calib rows and the baselines always run. Default: the full plan")
    ap.add_argument("--estimate", action="store_true",
                    help="print the plan's wall-time estimate on --workers from an existing result's row times, "
                         "per bf16 kernel its rows ran with (this CPU's is named), and exit: choose --budget-hours "
                         "from it")
    ap.add_argument("--report-only", action="store_true", help="rebuild the report from an existing --json")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--deadline", type=float, default=None, help=argparse.SUPPRESS)  # epoch s, for workers
    args = ap.parse_args(argv)
    if args.budget_hours is not None and not args.budget_hours > 0:
        ap.error(f"--budget-hours {args.budget_hours}: give a positive number of hours (omit it for the full plan)")
    if args.worker:
        worker(args)
        return {}
    prof = PROFILES[args.profile]
    stem, results = stem_of(args.model), RESULTS
    json_path = Path(args.json) if args.json else None
    if args.estimate:
        json_path = json_path or find_result(results, stem, args.profile)
        if json_path is None or not json_path.exists():
            raise SystemExit(f"--estimate needs a result to time from: pass --json PATH (none found for {args.model}, "
                             f"profile {args.profile}, in {results})")
        rows = json.loads(json_path.read_text())["rows"]
        here = bf16_kernel(emulate_bf16_here()) if prof["bf16_eval"] else "float32"
        kernels = sorted({r["bf16_kernel"] for r in rows.values() if r.get("bf16_kernel")} | {here})
        out = {"json": str(json_path), "this_cpu_kernel": here,
               "by_kernel": {k: estimate_plan(prof, rows, args.workers, k) for k in kernels}}
        print(json.dumps(out, indent=1))
        return out
    if not args.report_only:
        t_start = time.time()
        torch.set_num_threads(1)
        torch.set_flush_denormal(True)
        work = Path(args.work or f"/tmp/faircalib-fidelity-{stem}-{args.profile}")
        ctx = Context(args.model, prof, work)
        ctx.cache_path = teacher_cache_path(args.teacher_cache, args.model, stem, results, ctx.kernel)
        log_kernel(ctx)
        if json_path is None:  # resume the model's result of this profile if there is one
            json_path = find_result(results, stem, args.profile)
        if json_path is not None and json_path.exists():
            log(f"resuming {json_path} ({len(json.loads(json_path.read_text())['rows'])} rows done)")
        else:
            selection = select_bits(ctx) if args.bits == "auto" else {"chosen": args.bits, "reason": "given"}
            json_path = json_path or results / f"fidelity_{stem}_{selection['chosen']}.json"
            json_path.parent.mkdir(parents=True, exist_ok=True)
            json_path.write_text(json.dumps({"settings": settings_of(args, prof, ctx, selection), "rows": {},
                                             "methods": {}, "paired": {}}, indent=1))
        ctx.teacher()  # once, before the workers start
        for stale in list((work / "claims").glob("*")) if (work / "claims").exists() else []:
            stale.unlink()  # claims of an earlier, interrupted invocation
        deadline = start_budget(json_path, args.budget_hours, max(1, args.workers), t_start)
        cmd = [sys.executable, __file__, "--worker", "--model", args.model, "--json", str(json_path),
               "--profile", args.profile, "--work", str(work), "--teacher-cache", args.teacher_cache,
               "--workers", str(max(1, args.workers))] + ([] if deadline is None else ["--deadline", str(deadline)])
        procs = [subprocess.Popen(cmd) for _ in range(max(1, args.workers))]
        rcs = [p.wait() for p in procs]
        if any(rcs):
            raise SystemExit(f"a worker failed (exit codes {rcs}); rerun the same command to resume")
    elif json_path is None or not json_path.exists():
        raise SystemExit("--report-only needs --json PATH of an existing result")
    result = json.loads(json_path.read_text())
    if args.report:
        _report_module().build_report(result, Path(args.report))
    out = {"json": str(json_path), "rows": len(result["rows"]), "bits": result["settings"]["bits"],
           "faircalib_vs_flatquant": result["paired"].get("faircalib_vs_flatquant")}
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
