"""A job's stages, what each needs from the library, and the stage bodies that are wired today.

    probe -> calibrate -> evaluate -> upload        (method faircalib)
             calibrate -> evaluate -> upload        (rtn, quarot, flatquant, qdrop)
                          evaluate -> upload        (fp: evaluate the unquantized model)

A stage is *offered* only when its body is wired here AND the library calls it needs exist in this
installation; `check_offered` rejects a job otherwise, naming the missing call (no placeholders), and
`validate` also runs the library's own config checks (ProbeConfig, QuantConfig, CalibConfig) at submit.
Stage bodies only orchestrate: they hand `faircalib` calls to Ray workers (faircalib.workers), write
files under the stage's local directory and upload them (manifest last). A stage returns a
`StageResult`; the scheduler persists its output and artifacts, so a crashed or retried job resumes
at the next incomplete stage and reuses finished stages' artifacts (fetched and verified when the
local copy is gone, e.g. on another machine).

Wired: probe (faircalib.probe.probe_shard on probe actors, PositionPrior.merge, the prior cache),
calibrate (faircalib.quant.quantize + faircalib.checkpoint.save_quantized on one calibration actor),
evaluate (faircalib.eval.compare_to_reference on eval actors; quantized models via
faircalib.checkpoint.load_quantized), upload. A new stage or eval task = a StageSpec / eval_tasks entry
naming the library calls it needs.
"""
from __future__ import annotations

import functools
import importlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from faircalib.orchestrator.config import EVAL_TASKS_BUILTIN, METHODS, JobConfig
from faircalib.orchestrator.storage import MANIFEST, Storage, endpoint_hint, fetch_tree, upload_tree

from faircalib.errors import ConfigError


@dataclass(frozen=True)
class StageResult:
    output: dict[str, Any] = field(default_factory=dict)           # JSON summary kept on the stage row
    artifacts: list[tuple[str, str, str, int]] = field(default_factory=list)  # (name, uri, sha256, size)
    results: dict[str, Any] | None = None                          # merged into the job's results


@dataclass
class StageContext:
    """What a stage body sees. Built by the scheduler for one claimed attempt of one job."""
    job: Any                      # store.JobRow
    config: JobConfig
    store: Any                    # store.JobStore
    root_storage: Storage         # the job's storage URI (priors live under <root>/priors/)
    storage: Storage              # <root>/<job id>: this job's objects
    workdir: Path                 # local scratch for this job
    outputs: dict[str, dict]      # outputs of this job's finished stages
    stage: str = ""
    emit_fn: Callable[..., None] | None = None
    stop_fn: Callable[[], bool] | None = None
    ray_address: str | None = None

    def emit(self, kind: str, message: str, data: dict | None = None) -> None:
        if self.emit_fn:
            self.emit_fn(kind, message, data, self.stage)

    def should_stop(self) -> bool:
        return bool(self.stop_fn and self.stop_fn())

    def worker_event(self, event: dict) -> None:
        """Adapter for faircalib.workers.pool on_event: pool/actor events -> job events."""
        kind = str(event.get("kind", "progress"))[:16]
        message = event.get("message") or ", ".join(f"{k}={v}" for k, v in event.items() if k != "kind")
        self.emit(kind, str(message), {k: v for k, v in event.items() if k not in ("kind", "message")})

    def stage_dir(self, name: str | None = None) -> Path:
        path = self.workdir / (name or self.stage)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def upload_stage_dir(self, name: str | None = None) -> list[tuple[str, str, str, int]]:
        """Upload <workdir>/<stage>/ to <job>/<stage>/ (idempotent, manifest last) -> artifact rows."""
        name = name or self.stage
        target = self.storage.child(name)
        local = self.stage_dir(name)
        up = upload_tree(target, local, meta={"job": self.job.id, "stage": name})
        (local / ".complete").write_text("uploaded\n")
        m = up["manifest_object"]
        return ([(f"{name}/{k}", target.url(k), o["sha256"], o["size"]) for k, o in up["objects"].items()]
                + [(f"{name}/{MANIFEST}", target.url(MANIFEST), m["sha256"], m["size"])])

    def fetch_stage_dir(self, name: str) -> Path:
        """Local copy of a finished stage's files: present, or fetched from storage and verified."""
        local = self.workdir / name
        if not (local / ".complete").is_file():
            fetch_tree(self.storage.child(name), local)
            (local / ".complete").write_text("fetched\n")
        return local

    def ensure_ray(self) -> None:
        from faircalib.workers.pool import ensure_ray

        ensure_ray(self.ray_address)


@dataclass(frozen=True)
class StageSpec:
    name: str
    run: Callable[[StageContext], StageResult] | None   # None: not wired yet
    requires: Callable[[JobConfig], tuple[str, ...]] = lambda cfg: ()  # "module:attr" library calls
    what: str = ""
    validate: Callable[[JobConfig], None] | None = None  # the library's own config checks, run at submit


def library_call_exists(ref: str) -> bool:
    module, _, attr = ref.partition(":")
    try:
        mod = importlib.import_module(module)
    except ImportError:
        return False
    return not attr or hasattr(mod, attr)


def _dotted(ref: str) -> str:
    return ref.replace(":", ".")


def default_plan(config: JobConfig) -> list[str]:
    if config.method == "fp":
        return ["evaluate", "upload"]
    if config.method == "faircalib":
        return ["probe", "calibrate", "evaluate", "upload"]
    return ["calibrate", "evaluate", "upload"]


@dataclass(frozen=True)
class StageRegistry:
    specs: dict[str, StageSpec]
    planner: Callable[[JobConfig], list[str]] = default_plan
    eval_tasks: dict[str, tuple[str, ...]] = field(default_factory=dict)  # task -> library calls it needs
    lm_eval: bool = False  # offer lm-eval task names (faircalib.eval.harness) besides the built-in tasks

    def plan(self, config: JobConfig) -> list[str]:
        return self.planner(config)

    def why_not_offered(self, config: JobConfig) -> str | None:
        """None when every stage of the config's plan is wired and its library calls exist."""
        for name in self.plan(config):
            spec = self.specs.get(name)
            if spec is None or spec.run is None:
                needs = ", ".join(_dotted(r) for r in spec.requires(config)) if spec else "?"
                return f"stage {name!r} ({spec.what if spec else 'unknown'}) is not wired yet; it waits for {needs}"
            missing = [_dotted(r) for r in spec.requires(config) if not library_call_exists(r)]
            if missing:
                return f"stage {name!r} needs {', '.join(missing)}, which this installation does not have yet"
        return None

    def validate(self, config: JobConfig) -> None:
        """check_offered + each planned stage's library-level config validation (ConfigError)."""
        self.check_offered(config)
        for name in self.plan(config):
            spec = self.specs[name]
            if spec.validate is not None:
                spec.validate(config)

    def offered_methods(self, template: JobConfig) -> list[str]:
        from dataclasses import replace

        return [m for m in METHODS if self.why_not_offered(replace(template, method=m, name=template.name)) is None]

    def check_offered(self, config: JobConfig) -> None:
        """ConfigError (one line, field + allowed values) when the job asks for something not offered."""
        why = self.why_not_offered(config)
        if why:
            offered = ", ".join(self.offered_methods(config)) or "none"
            raise ConfigError(f"method: {config.method!r} is not offered by this installation: {why}; "
                              f"offered methods: {offered}")
        if "evaluate" in self.plan(config):
            self.check_eval_tasks(config)

    def offered_eval_tasks(self) -> list[str]:
        """Built-in evaluation tasks this installation offers (lm-eval names are checked separately)."""
        return [t for t, reqs in self.eval_tasks.items() if all(map(library_call_exists, reqs))]

    def lm_eval_offered(self) -> bool:
        return self.lm_eval and all(map(library_call_exists, LM_EVAL_REQUIRES))

    def check_eval_tasks(self, config: JobConfig) -> None:
        """Every evaluation.tasks name must be a built-in task or (when lm-eval is offered) a task/group of
        the offline suite or of lm-eval's registry; a suite member may not repeat its group."""
        builtin = self.offered_eval_tasks()
        tasks = config.evaluation.tasks
        others = [(i, t) for i, t in enumerate(tasks) if t not in builtin]
        if not others:
            return
        if not self.lm_eval_offered():
            i, t = others[0]
            raise ConfigError(f"evaluation.tasks[{i}]: {t!r} is not offered by this installation "
                              f"(no lm-eval integration: {', '.join(map(_dotted, LM_EVAL_REQUIRES))}); "
                              f"offered: {', '.join(builtin) or 'none'}")
        from faircalib.eval.suite import GROUPS, OWN_NAMES

        unknown = set(lm_eval_unknown([t for _, t in others]))
        for i, t in others:
            if t in unknown:
                raise ConfigError(f"evaluation.tasks[{i}]: {t!r} is not a known task; offered: "
                                  f"{', '.join(builtin + sorted(OWN_NAMES, key=_suite_order))}, or any task or "
                                  f"group in lm-eval's registry (e.g. piqa, hellaswag, arc_easy, gsm8k; they need "
                                  f"their datasets)")
        for i, t in enumerate(tasks):
            for g in tasks:
                if g != t and t in GROUPS.get(g, ()):
                    raise ConfigError(f"evaluation.tasks[{i}]: {t!r} is already part of group {g!r}; "
                                      f"list one of them")


LM_EVAL_REQUIRES = ("faircalib.eval.harness:run_lm_eval", "faircalib.eval.harness:default_decoding")


def _suite_order(name: str) -> tuple[int, str]:
    from faircalib.eval.suite import GROUPS, SUITE_GROUP

    return (0 if name == SUITE_GROUP else 1 if name in GROUPS else 2, name)


@functools.lru_cache(maxsize=1)
def _lm_eval_registry() -> frozenset[str]:
    from lm_eval.tasks import TaskManager

    return frozenset(TaskManager(include_defaults=True).all_tasks)  # indexing takes seconds: once per process


def lm_eval_unknown(names: list[str]) -> list[str]:
    """The names that are neither in the offline suite nor in lm-eval's registry (indexed only when a
    name is not the suite's and not in its `faircalib_` namespace)."""
    from faircalib.eval.suite import OWN_NAMES

    ours = [n for n in names if n not in OWN_NAMES and n.startswith("faircalib_")]  # our namespace: no lookup
    rest = [n for n in names if n not in OWN_NAMES and n not in ours]
    if not rest:
        return ours
    known = _lm_eval_registry()
    return ours + [n for n in rest if n not in known]


# ---------------------------------------------------------------- wired stage bodies
def lm_eval_settings(cfg: JobConfig) -> dict:
    """The job's lm-eval knobs as run_lm_eval keyword values (passed to the eval actors)."""
    ev = cfg.evaluation
    return {"limit": ev.limit, "mc_num": ev.mc_num, "batch_size": ev.batch_size, "gen_batch_size": ev.gen_batch_size,
            "check_greedy": ev.check_greedy, "bootstrap_iters": ev.bootstrap_iters, "seed": ev.seed,
            "decoding": dict(ev.decoding)}


def validate_evaluate(cfg: JobConfig) -> None:
    """The library's own checks of the lm-eval settings (LMEvalSettings: decoding values etc.)."""
    ev = cfg.evaluation
    if not ev.lm_eval_tasks:
        return
    from faircalib.eval.lm import LMEvalSettings

    try:
        LMEvalSettings(mc_num=ev.mc_num, batch_size=ev.batch_size, gen_batch_size=ev.gen_batch_size, seed=ev.seed,
                       check_greedy=ev.check_greedy, decoding=dict(ev.decoding))
    except ConfigError as e:
        raise ConfigError(f"evaluation: {e}") from e


VARIANTS = ("fp", "quantized")


def shape_eval_results(parts: dict[str, dict]) -> tuple[dict, dict]:
    """Eval actors' {task: {variant: result}} -> (metrics, lm_eval).

    metrics: {task: {variant: {metric: value, ..., "wall_s"}}} for `fidelity` (as the library returns
    it, plus wall_s) and for every lm-eval leaf task and group (lm-eval's metric names without the
    ",none" filter suffix, stderr included, n_samples, wall_s: that task's whole simple_evaluate call);
    group entries also carry "group_of": [leaf tasks]. lm_eval: {unit: {variant: the whole
    run_lm_eval result}} (settings, decoding, versions) for the report."""
    metrics: dict[str, dict] = {}
    full: dict[str, dict] = {}
    for unit, out in parts.items():
        if unit == "fidelity":
            metrics[unit] = out
            continue
        full[unit] = out
        for variant in VARIANTS:
            res = out.get(variant)
            if res is None:
                continue
            for task, entry in res.get("tasks", {}).items():
                row = dict(entry.get("metrics") or {})
                row.update({k: entry[k] for k in ("n_samples", "wall_s") if entry.get(k) is not None})
                metrics.setdefault(task, {})[variant] = row
            for group, entry in res.get("groups", {}).items():
                row = dict(entry.get("metrics") or {})
                if entry.get("wall_s") is not None:
                    row["wall_s"] = entry["wall_s"]
                metrics.setdefault(group, {})[variant] = row
                if entry.get("tasks"):
                    metrics[group]["group_of"] = list(entry["tasks"])
    return metrics, full


def run_evaluate(ctx: StageContext) -> StageResult:
    """Eval actors (faircalib.workers.eval) run evaluation.tasks (one shard per task name, spread over
    `eval_workers` actors, each holding the FP model and, for quantizing methods, the calibrated
    checkpoint); results.json (metrics + the full lm-eval results) and report.md (FP vs quantized
    table) are uploaded, and the metrics are merged into the job's results."""
    from faircalib.orchestrator.report import results_markdown
    from faircalib.workers.eval import run_eval, setup_eval
    from faircalib.workers.pool import ShardTask, resolve_resources, run_sharded

    cfg = ctx.config
    ctx.ensure_ray()
    res, note = resolve_resources(cfg.resources.cpus_per_worker, cfg.resources.gpus_per_worker)
    if note:
        ctx.emit("resources", note)
    ev = cfg.evaluation
    checkpoint = None
    if cfg.method != "fp":
        checkpoint = {"storage": ctx.storage.child("calibrate", "checkpoint").uri,  # outside evaluate/: not re-uploaded
                      "dest": str(ctx.workdir / "_eval_checkpoint"), "storage_hint": endpoint_hint(ctx.storage.uri)}
    task = ShardTask(setup=setup_eval, run=run_eval, name="evaluate", setup_kwargs={
        "model": cfg.model, "threads": max(1, int(cfg.resources.cpus_per_worker)), "checkpoint": checkpoint,
        "settings": {"data": ev.data, "n": ev.n, "seq_len": ev.seq_len, "seed": ev.seed},
        "lm_eval": lm_eval_settings(cfg) if ev.lm_eval_tasks else None})
    t0 = time.monotonic()
    parts = run_sharded(list(ev.tasks), task, shard_size=1, n_workers=cfg.resources.eval_workers, resources=res,
                        max_retries=cfg.resources.max_retries, on_event=ctx.worker_event,
                        should_stop=ctx.should_stop)
    merged: dict[str, dict] = {}
    for part in parts:
        merged.update(part)
    metrics, lm_full = shape_eval_results(merged)
    wall = round(time.monotonic() - t0, 3)
    out_dir = ctx.stage_dir("evaluate")
    summary = {"job": ctx.job.id, "name": ctx.job.name, "model": cfg.model, "method": cfg.method, "bits": cfg.bits,
               "tasks": list(ev.tasks), "metrics": metrics, "lm_eval": lm_full, "wall_s": wall,
               "settings": {"fidelity": {"data": ev.data, "n": ev.n, "seq_len": ev.seq_len, "seed": ev.seed},
                            "lm_eval": lm_eval_settings(cfg) if ev.lm_eval_tasks else None}}
    (out_dir / "results.json").write_text(json.dumps(summary, indent=1, sort_keys=True, default=str))
    (out_dir / "report.md").write_text(results_markdown(summary))
    artifacts = ctx.upload_stage_dir("evaluate")
    return StageResult(output={"metrics": metrics, "wall_s": wall}, artifacts=artifacts,
                       results={"metrics": metrics})


def run_upload(ctx: StageContext) -> StageResult:
    """job.json (config, stage outputs, results, versions) + the job log, then the job's top-level
    manifest LAST, covering every object under <storage>/<job id>/ (earlier stages' included)."""
    import faircalib

    wd = ctx.workdir
    job = ctx.store.get_job(ctx.job.id)
    summary = {"id": job.id, "name": job.name, "config": ctx.config.to_dict(), "results": job.results,
               "stages": ctx.outputs, "attempt": job.attempt, "faircalib_version": faircalib.__version__,
               "created_at": job.created_at.isoformat() + "Z"}
    previous = {a["name"]: {"sha256": a["sha256"], "size": a["size"]} for a in ctx.store.artifacts(job.id)
                if a["name"] != MANIFEST}
    staging = ctx.stage_dir("upload")
    (staging / "job.json").write_text(json.dumps(summary, indent=1, sort_keys=True, default=str))
    log_file = wd / "logs" / "job.log"
    if log_file.is_file():
        (staging / "logs").mkdir(exist_ok=True)
        (staging / "logs" / "job.log").write_bytes(log_file.read_bytes())  # snapshot: the log keeps growing
    up = upload_tree(ctx.storage, staging, extra_objects=previous,
                     meta={"job": job.id, "name": job.name, "complete": True})
    new = {k: v for k, v in up["objects"].items() if k not in previous}
    artifacts = [(k, ctx.storage.url(k), o["sha256"], o["size"]) for k, o in new.items()]
    m = up["manifest_object"]
    artifacts.append((MANIFEST, ctx.storage.url(MANIFEST), m["sha256"], m["size"]))
    return StageResult(output={"uri": ctx.storage.uri, "objects": len(up["objects"])}, artifacts=artifacts)


PROBE_BATCH = 16  # the library's ProbeConfig.batch_size: fixed so priors never depend on sharding


def probe_config_dict(cfg: JobConfig) -> dict:
    """The job's probe settings as a faircalib.probe.ProbeConfig dict."""
    p = cfg.probe
    return {"prompts": p.prompts, "n_samples": p.n, "steps": p.steps, "window": p.window, "seed": p.seed,
            "batch_size": PROBE_BATCH,
            "prior": {"schedule": p.schedule, "a_min": p.a_min, "a_max": p.a_max, "gamma": p.gamma,
                      "beta": p.beta, "reliability": p.reliability}}


def validate_probe(cfg: JobConfig) -> None:
    from faircalib.probe import ProbeConfig

    try:
        ProbeConfig.from_dict(probe_config_dict(cfg))
    except ConfigError as e:
        raise ConfigError(f"probe: {e}") from e


def run_probe(ctx: StageContext) -> StageResult:
    """Stage I: the prior for (model weights, probe settings) from the cache, or built once by
    `probe_workers` probe actors, each running faircalib.probe.probe_shard on contiguous ranges of the
    probe set (multiples of the probe batch, so PositionPrior.merge equals the single-pass prior)."""
    from faircalib.orchestrator.priors import obtain_prior, prior_key
    from faircalib.workers.pool import ShardTask, resolve_resources, run_sharded
    from faircalib.workers.probe import run_probe_ranges, setup_probe

    from faircalib.models import weights_hash

    cfg = ctx.config
    model_hash = weights_hash(cfg.model)
    key = prior_key(model_hash, cfg.probe, library={"batch_size": PROBE_BATCH})
    ctx.store.set_prior_key(ctx.job.id, key)

    def build(local: Path) -> dict:
        from faircalib.probe import PositionPrior

        ctx.ensure_ray()
        res, note = resolve_resources(cfg.resources.cpus_per_worker, cfg.resources.gpus_per_worker)
        if note:
            ctx.emit("resources", note)
        n, step = cfg.probe.n, -(-cfg.resources.probe_shard_size // PROBE_BATCH) * PROBE_BATCH
        ranges = [(a, min(a + step, n)) for a in range(0, n, step)]
        task = ShardTask(setup=setup_probe, run=run_probe_ranges, name="probe", setup_kwargs={
            "model": cfg.model, "probe_config": probe_config_dict(cfg), "model_hash": model_hash,
            "threads": max(1, int(cfg.resources.cpus_per_worker))})
        t0 = time.monotonic()
        parts = run_sharded(ranges, task, shard_size=1, n_workers=cfg.resources.probe_workers, resources=res,
                            max_retries=cfg.resources.max_retries, on_event=ctx.worker_event,
                            should_stop=ctx.should_stop)
        prior = PositionPrior.merge([p for shard in parts for p in shard])
        prior.save(local)
        return {"n_samples": prior.n_samples, "window": prior.window, "library_cache_key": prior.cache_key(),
                "shards": len(ranges), "workers": cfg.resources.probe_workers,
                "wall_s": round(time.monotonic() - t0, 3)}

    got = obtain_prior(ctx, key, build)
    return StageResult(output={"prior_key": key, "uri": got.uri, "cached": got.cached, **got.metadata})


def validate_calibrate(cfg: JobConfig) -> None:
    from faircalib.workers.calibrate import BITS

    from faircalib.quant import CalibConfig, QuantConfig

    w, a = BITS[cfg.bits]
    try:
        QuantConfig(method=cfg.method, w_bits=w, a_bits=a, seed=cfg.calibration.seed)
        CalibConfig(epochs=cfg.calibration.epochs, batch_size=cfg.calibration.batch_size, lr=cfg.calibration.lr)
    except ConfigError as e:
        raise ConfigError(f"calibration: {e}") from e


def run_calibrate(ctx: StageContext) -> StageResult:
    """Stage II on one calibration actor (faircalib.workers.calibrate): quantize with the aligned prior
    (faircalib) or uniform weights, per-block state uploaded to <job>/calibrate/state/ as it goes (a rerun
    resumes at the next block), checkpoint uploaded to <job>/calibrate/checkpoint/ (manifest last)."""
    from faircalib.workers.calibrate import calibrate_request
    from faircalib.workers.pool import ShardTask, resolve_resources, run_single

    cfg, c = ctx.config, ctx.config.calibration
    ctx.ensure_ray()
    res, note = resolve_resources(cfg.resources.cpus_per_worker, cfg.resources.calibration_gpus)
    if note:
        ctx.emit("resources", note)
    prior_uri = ctx.outputs["probe"]["uri"] if cfg.uses_probe else None
    here = ctx.storage.child("calibrate")
    request = {"model": cfg.model, "method": cfg.method, "bits": cfg.bits, "data": c.data, "n": c.n,
               "seq_len": c.seq_len, "epochs": c.epochs, "batch_size": c.batch_size, "lr": c.lr, "seed": c.seed,
               "floor": cfg.probe.floor, "prior_uri": prior_uri, "threads": max(1, int(cfg.resources.cpus_per_worker)),
               "workdir": str(ctx.stage_dir("calibrate")), "state_uri": here.child("state").uri,
               "checkpoint_uri": here.child("checkpoint").uri, "storage_hint": endpoint_hint(ctx.storage.uri)}
    out = run_single(ShardTask(setup=None, run=calibrate_request, name="calibrate"), request, resources=res,
                     max_retries=cfg.resources.max_retries, on_event=ctx.worker_event, should_stop=ctx.should_stop)
    ckpt, state = here.child("checkpoint"), here.child("state")
    m = out["manifest_object"]
    artifacts = ([(f"calibrate/checkpoint/{k}", ckpt.url(k), o["sha256"], o["size"]) for k, o in out["objects"].items()]
                 + [(f"calibrate/checkpoint/{MANIFEST}", ckpt.url(MANIFEST), m["sha256"], m["size"])]
                 + [(f"calibrate/state/{k}", state.url(k), o["sha256"], o["size"])
                    for k, o in out["state_objects"].items()])
    return StageResult(output={"checkpoint_uri": ckpt.uri, "checkpoint_bytes": out["checkpoint_bytes"],
                               "fallbacks": out["fallbacks"], "calibration_wall_s": out["wall_time_s"],
                               "prior_uri": prior_uri}, artifacts=artifacts)


def _needs_quantized_loader(cfg: JobConfig) -> tuple[str, ...]:
    return ("faircalib.eval:compare_to_reference",) + (() if cfg.method == "fp" else
                                                         ("faircalib.checkpoint:load_quantized",))


DEFAULT_STAGES: dict[str, StageSpec] = {
    "probe": StageSpec("probe", run_probe, what="Stage I probing", validate=validate_probe,
                       requires=lambda cfg: ("faircalib.probe:probe_shard", "faircalib.probe:PositionPrior",
                                             "faircalib.models:weights_hash")),
    "calibrate": StageSpec("calibrate", run_calibrate, what="Stage II calibration", validate=validate_calibrate,
                           requires=lambda cfg: ("faircalib.quant:quantize", "faircalib.checkpoint:save_quantized")),
    "evaluate": StageSpec("evaluate", run_evaluate, what="evaluation", requires=_needs_quantized_loader,
                          validate=validate_evaluate),
    "upload": StageSpec("upload", run_upload, what="final upload"),
}
DEFAULT_EVAL_TASKS: dict[str, tuple[str, ...]] = {t: ("faircalib.eval:compare_to_reference",)
                                                  for t in EVAL_TASKS_BUILTIN}
DEFAULT_REGISTRY = StageRegistry(specs=DEFAULT_STAGES, eval_tasks=DEFAULT_EVAL_TASKS, lm_eval=True)
