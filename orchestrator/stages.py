"""A job's stages and their bodies.

    probe -> calibrate -> evaluate -> upload        (methods that use the Stage I prior: faircalib,
                                                     qdrop with qdrop_weighted)
             calibrate -> evaluate -> upload        (the other quantizing methods)
                          evaluate -> upload        (fp: evaluate the unquantized model)

The plan comes from the method registry (faircalib.quant.methods: `uses_prior`, `quantizes`). Stage
bodies only orchestrate: they hand the job's library configs (as `to_dict()`) to Ray workers
(faircalib.workers), which call the library's entry points (`probe_shard`, `run_method`,
`evaluate_models`); they write files under the stage's local directory and upload them (manifest
last). A stage returns a `StageResult`; the scheduler persists its output and artifacts, so a crashed
or retried job resumes at the next incomplete stage and reuses finished stages' artifacts (fetched and
verified when the local copy is gone, e.g. on another machine). Result shaping is results.py.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from faircalib.orchestrator.config import JobConfig, check_job
from faircalib.orchestrator.finite_checks import check_stage_metrics
from faircalib.orchestrator.results import evaluation_summary
from faircalib.orchestrator.seal import verify_recorded
from faircalib.service.storage import MANIFEST, Storage, endpoint_hint, fetch_tree, upload_tree

from faircalib.errors import FaircalibError


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
    pool: Any = None              # the scheduler's faircalib.workers.pool.WarmPool (None: actors per stage)

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

    def transfer_events(self, every_s: float = 1.0) -> Callable[[dict], None]:
        """A storage progress callback (upload_tree / fetch_tree `transfer` events) that records them as
        job events, at most one per `every_s` (and the last), for the CLI's byte bars."""
        from faircalib.progress import human_bytes

        last = [-1e18]

        def cb(e: dict) -> None:
            now = time.monotonic()
            if now - last[0] < every_s and e["done"] < e["total"]:
                return
            last[0] = now
            self.emit("progress", f"{e['direction']} {human_bytes(e['done'])}/{human_bytes(e['total'])} "
                                  f"({e['key']})", e)

        return cb

    def stage_dir(self, name: str | None = None) -> Path:
        path = self.workdir / (name or self.stage)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def upload_stage_dir(self, name: str | None = None) -> list[tuple[str, str, str, int]]:
        """Upload <workdir>/<stage>/ to <job>/<stage>/ (idempotent, manifest last) -> artifact rows."""
        name = name or self.stage
        target = self.storage.child(name)
        local = self.stage_dir(name)
        up = upload_tree(target, local, meta={"job": self.job.id, "stage": name}, progress=self.transfer_events())
        (local / ".complete").write_text("uploaded\n")
        return artifact_rows(target, up, prefix=f"{name}/")

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

    def resources(self, gpus: float):
        """The Ray request for this job's actors (CPU fallback recorded as an event)."""
        from faircalib.workers.pool import resolve_resources

        self.ensure_ray()
        res, note = resolve_resources(self.config.resources.cpus_per_worker, gpus)
        if note:
            self.emit("resources", note)
        return res


def artifact_rows(target: Storage, upload: dict, prefix: str = "") -> list[tuple[str, str, str, int]]:
    """upload_tree's result -> artifact rows (objects, then the manifest)."""
    m = upload["manifest_object"]
    return ([(f"{prefix}{k}", target.url(k), o["sha256"], o["size"]) for k, o in upload["objects"].items()]
            + [(f"{prefix}{MANIFEST}", target.url(MANIFEST), m["sha256"], m["size"])])


@dataclass(frozen=True)
class StageSpec:
    name: str
    run: Callable[[StageContext], StageResult]
    what: str = ""


def default_plan(config: JobConfig) -> list[str]:
    """The stages of a job, from its method's registry traits."""
    return ((["probe"] if config.run.uses_prior else []) + (["calibrate"] if config.run.spec.quantizes else [])
            + ["evaluate", "upload"])


@dataclass(frozen=True)
class StageRegistry:
    specs: dict[str, StageSpec]
    planner: Callable[[JobConfig], list[str]] = default_plan

    def plan(self, config: JobConfig) -> list[str]:
        return self.planner(config)

    def validate(self, config: JobConfig) -> None:
        """Submit-time checks (ConfigError): every planned stage exists; the job's own checks."""
        missing = [n for n in self.plan(config) if n not in self.specs]
        if missing:
            raise FaircalibError(f"stage {missing[0]!r} has no body in this registry")
        check_job(config)


# ---------------------------------------------------------------- stage bodies
def run_probe(ctx: StageContext) -> StageResult:
    """Stage I: the prior for (model weights, probe settings) from the cache (keyed by the library's
    prior cache key), or built once by `probe_workers` probe actors, each running
    faircalib.probe.probe_shard on contiguous ranges of the probe set (multiples of the probe batch, so
    PositionPrior.merge equals the single-pass prior bit for bit)."""
    from faircalib.orchestrator.priors import job_prior_key, model_key, obtain_prior
    from faircalib.workers.pool import ShardTask, run_sharded
    from faircalib.workers.probe import run_probe_ranges, setup_probe

    from faircalib.models import weights_hash

    cfg = ctx.config
    probe = cfg.run.probe
    weights = weights_hash(cfg.model)  # reads every weight file (16 GB at 8B): once
    model_hash = model_key(cfg, weights)  # what the shards' priors are keyed by (+ resources.dtype)
    key = job_prior_key(cfg, weights)
    ctx.store.set_prior_key(ctx.job.id, key)

    def build(local: Path) -> dict:
        from faircalib.probe import PositionPrior

        res = ctx.resources(cfg.resources.gpus_per_worker)
        n, bs = probe.n_samples, probe.batch_size
        step = -(-cfg.resources.probe_shard_size // bs) * bs
        ranges = [(a, min(a + step, n)) for a in range(0, n, step)]
        task = ShardTask(setup=setup_probe, run=run_probe_ranges, name="probe", setup_kwargs={
            "model": cfg.model, "probe_config": probe.to_dict(), "model_hash": model_hash,
            "threads": cfg.resources.threads, "dtype": cfg.resources.dtype})
        t0 = time.monotonic()
        by_node: dict[str, list[int]] = {}

        def on_event(e: dict) -> None:
            if e.get("kind") == "shard_done" and e.get("node_id"):
                by_node.setdefault(e["node_id"], []).append(e["shard"])
            ctx.worker_event(e)

        parts = run_sharded(ranges, task, shard_size=1, n_workers=cfg.resources.probe_workers, resources=res,
                            max_retries=cfg.resources.max_retries, on_event=on_event,
                            should_stop=ctx.should_stop, pool=ctx.pool)
        prior = PositionPrior.merge([p for shard in parts for p in shard])
        if prior.cache_key() != key:
            raise FaircalibError(f"probe: the merged prior's key {prior.cache_key()[:12]} is not the expected "
                                 f"{key[:12]}; the probe settings changed while probing")
        prior.save(local)
        return {"n_samples": prior.n_samples, "window": prior.window, "shards": len(ranges),
                "workers": cfg.resources.probe_workers, "wall_s": round(time.monotonic() - t0, 3),
                "shards_by_node": {n: sorted(v) for n, v in by_node.items()}}

    got = obtain_prior(ctx, key, build)
    return StageResult(output={"prior_key": key, "uri": got.uri, "cached": got.cached, **got.metadata})


def run_calibrate(ctx: StageContext) -> StageResult:
    """Stage II on one calibration actor (faircalib.workers.calibrate): faircalib.pipeline.run_method
    with the job's MethodConfig and the Stage I prior, per-block state uploaded to <job>/calibrate/state/
    as it goes (a rerun resumes at the next block), checkpoint uploaded to <job>/calibrate/checkpoint/
    (manifest last)."""
    from faircalib.workers.calibrate import calibrate_request
    from faircalib.workers.pool import ShardTask, run_single

    cfg = ctx.config
    res = ctx.resources(cfg.resources.calibration_gpus)
    prior_uri = ctx.outputs["probe"]["uri"] if cfg.uses_prior else None
    here = ctx.storage.child("calibrate")
    ckpt, state = here.child("checkpoint"), here.child("state")
    request = {"model": cfg.model, "method_config": cfg.run.to_dict(), "prior_uri": prior_uri,
               "threads": cfg.resources.threads, "dtype": cfg.resources.dtype,
               "workdir": str(ctx.stage_dir("calibrate")),
               "state_uri": state.uri, "checkpoint_uri": ckpt.uri, "storage_hint": endpoint_hint(ctx.storage.uri)}
    out = run_single(ShardTask(setup=None, run=calibrate_request, name="calibrate"), request, resources=res,
                     max_retries=cfg.resources.max_retries, on_event=ctx.worker_event, should_stop=ctx.should_stop,
                     pool=ctx.pool)
    artifacts = (artifact_rows(ckpt, out["checkpoint"], prefix="calibrate/checkpoint/")
                 + [(f"calibrate/state/{k}", state.url(k), o["sha256"], o["size"])
                    for k, o in out["state_objects"].items()])
    return StageResult(output={"checkpoint_uri": ckpt.uri, "checkpoint_bytes": out["checkpoint_bytes"],
                               "fallbacks": out["fallbacks"], "calibration_wall_s": out["wall_time_s"],
                               "prior_uri": prior_uri}, artifacts=artifacts)


def run_evaluate(ctx: StageContext) -> StageResult:
    """Eval actors (faircalib.workers.eval) run evaluation.tasks through faircalib.eval.evaluate_models
    (one shard per task name, spread over `eval_workers` actors, each holding the FP model and, for
    quantizing methods, the calibrated checkpoint); results.json (metrics + the full lm-eval results)
    and report.md (FP vs quantized table) are uploaded, and the metrics are merged into the job's results."""
    from faircalib.orchestrator.report import results_markdown
    from faircalib.workers.eval import run_eval, setup_eval
    from faircalib.workers.pool import ShardTask, run_sharded

    cfg = ctx.config
    res = ctx.resources(cfg.resources.gpus_per_worker)
    checkpoint = None
    if cfg.run.spec.quantizes:
        checkpoint = {"storage": ctx.storage.child("calibrate", "checkpoint").uri,  # outside evaluate/: not re-uploaded
                      "dest": str(ctx.workdir / "_eval_checkpoint"), "storage_hint": endpoint_hint(ctx.storage.uri)}
    task = ShardTask(setup=setup_eval, run=run_eval, name="evaluate", setup_kwargs={
        "model": cfg.model, "eval_config": cfg.evaluation.to_dict(), "threads": cfg.resources.threads,
        "checkpoint": checkpoint, "dtype": cfg.resources.dtype})
    keys, model_hash = fp_baseline_keys(cfg)
    cached = ctx.store.baselines(keys.values())
    hits = [t for t, k in keys.items() if k in cached]
    if hits:
        ctx.store.baseline_hit(keys[t] for t in hits)
        ctx.emit("baseline", f"FP baseline cached for {', '.join(hits)}; only the quantized model is evaluated there",
                 {"hits": hits})
    t0 = time.monotonic()
    items = [[t, cached.get(keys[t])] for t in cfg.evaluation.tasks]
    parts = run_sharded(items, task, shard_size=1, n_workers=cfg.resources.eval_workers,
                        resources=res, max_retries=cfg.resources.max_retries, on_event=ctx.worker_event,
                        should_stop=ctx.should_stop, pool=ctx.pool)
    merged: dict[str, dict] = {}
    for part in parts:
        merged.update(part)
    for t, k in keys.items():
        if t not in hits and isinstance(merged.get(t, {}).get("fp"), dict):
            ctx.store.baseline_put(k, task=t, model_hash=model_hash, result=merged[t]["fp"], job_id=ctx.job.id)
    summary = evaluation_summary(ctx.job.id, ctx.job.name, cfg, merged, round(time.monotonic() - t0, 3))
    out_dir = ctx.stage_dir("evaluate")
    (out_dir / "results.json").write_text(json.dumps(summary, indent=1, sort_keys=True, default=str))
    check_stage_metrics(ctx, summary["metrics"])  # a NaN metric fails the job (results.json stays in the work dir)
    (out_dir / "report.md").write_text(results_markdown(summary))
    artifacts = ctx.upload_stage_dir("evaluate")
    return StageResult(output={"metrics": summary["metrics"], "wall_s": summary["wall_s"],
                               "fp_baseline": {"cached": hits, "computed": [t for t in keys if t not in hits]}},
                       artifacts=artifacts, results={"metrics": summary["metrics"]})


def fp_baseline_keys(cfg: JobConfig) -> tuple[dict[str, str], str]:
    """({task: FP baseline key}, model weights hash) of a job's evaluation (faircalib.eval.settings)."""
    from faircalib.orchestrator.priors import model_key

    from faircalib.eval.settings import fp_baseline_key
    from faircalib.models import model_decoding, resolve_source, weights_hash

    model_hash = weights_hash(cfg.model)
    decoding = model_decoding(cfg.model, resolve_source(cfg.model)).values  # as the eval actor applies them
    mkey = model_key(cfg, model_hash)  # + resources.dtype when set: a float32 FP score is not a bf16 one
    return {t: fp_baseline_key(cfg.evaluation, t, mkey, decoding) for t in cfg.evaluation.tasks}, model_hash


def run_upload(ctx: StageContext) -> StageResult:
    """Every earlier object read back and checked against the job store's records (orchestrator.seal:
    repaired from the local copy, or the job fails naming it), job.json (config, stage outputs, results,
    versions) + the job log, then the job's top-level manifest LAST, covering every object under
    <storage>/<job id>/ (earlier stages' included)."""
    import faircalib

    wd = ctx.workdir
    job = ctx.store.get_job(ctx.job.id)
    summary = {"id": job.id, "name": job.name, "config": ctx.config.to_dict(), "results": job.results,
               "stages": ctx.outputs, "attempt": job.attempt, "faircalib_version": faircalib.__version__,
               "created_at": job.created_at.isoformat() + "Z"}
    previous = {a["name"]: {"sha256": a["sha256"], "size": a["size"]} for a in ctx.store.artifacts(job.id)
                if a["name"] != MANIFEST}
    verify_recorded(ctx.storage, previous, wd, emit=lambda msg: ctx.emit("repair", msg))  # before the seal
    staging = ctx.stage_dir("upload")
    (staging / "job.json").write_text(json.dumps(summary, indent=1, sort_keys=True, default=str))
    log_file = wd / "logs" / "job.log"
    if log_file.is_file():
        (staging / "logs").mkdir(exist_ok=True)
        (staging / "logs" / "job.log").write_bytes(log_file.read_bytes())  # snapshot: the log keeps growing
    up = upload_tree(ctx.storage, staging, extra_objects=previous,
                     meta={"job": job.id, "name": job.name, "complete": True}, progress=ctx.transfer_events())
    new = {k: v for k, v in up["objects"].items() if k not in previous}
    return StageResult(output={"uri": ctx.storage.uri, "objects": len(up["objects"])},
                       artifacts=artifact_rows(ctx.storage, {**up, "objects": new}))


DEFAULT_STAGES: dict[str, StageSpec] = {
    "probe": StageSpec("probe", run_probe, what="Stage I probing"),
    "calibrate": StageSpec("calibrate", run_calibrate, what="Stage II calibration"),
    "evaluate": StageSpec("evaluate", run_evaluate, what="evaluation"),
    "upload": StageSpec("upload", run_upload, what="final upload"),
}
DEFAULT_REGISTRY = StageRegistry(specs=DEFAULT_STAGES)
