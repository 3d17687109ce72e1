"""The job service's costs, measured side by side in one run (issues 6 and 14):

1. Stage I scaling: the service's probe path (faircalib.workers.probe on `run_sharded` probe actors of
   a warm pool, merged with PositionPrior.merge) on the same 512 prompts with 1 and with 2 probe
   workers, interleaved (1, 2, 2, 1, ...) so load drift on a shared machine hits both alike; the actors
   are warmed first (a scheduler's actors are: start-up and model load paid once per scheduler); the
   1-minute load average around each run, the median speedup, and whether both merged priors are identical.
2. Service overhead on a warm scheduler: two quickstart-sized FAIR-Calib jobs through one scheduler
   (SQLite store + local Ray + a local SeaweedFS S3 server with SigV4 credentials; probe -> calibrate ->
   evaluate -> upload). The first pays actor start-up and model loads; the second (other probe and
   evaluation seeds: its own prior and FP baseline, so it does all the work the first did) runs on the
   warm actors. Next to each, the same job as plain library calls in this process on the very same
   config objects (probe_prior -> run_method -> save_quantized -> load_quantized -> evaluate_models), 1
   torch thread everywhere. overhead = (service - library) / service; per-stage walls; whether the
   service's and the library's W4A4 checkpoints are bit-identical.
3. A 6-job sweep (faircalib and rtn x 3 bit settings) through `Scheduler` with max_jobs 1 and with
   max_jobs 2, each on a fresh job database (so each builds its prior and FP baselines once): wall
   time, the peak number of jobs running at once, prior reuse and FP-baseline cache hits.

    python benchmarks/service.py --json                       # zoo:tiny-llada if installed
    python benchmarks/service.py --json --model /path/to/dir  # any model directory with a tokenizer

Without the zoo model it uses an UNTRAINED stand-in with the zoo recipe's architecture and tokenizer
(same compute; the JSON says so). Prints one JSON object (--out also writes it).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

PROBE = {"prompts": "builtin:tasks:probe", "steps": 16, "window": 16, "seed": 0}
JOB = {
    "method": "faircalib", "bits": "w4a4",
    "probe": {**PROBE, "n_samples": 32},
    "calibration": {"data": "builtin:kjv:train", "n": 16, "seq_len": 128, "epochs": 2, "batch_size": 4},
    "evaluation": {"tasks": ["fidelity", "faircalib_tasks_mc"], "data": "builtin:kjv:heldout", "n": 8, "seq_len": 128,
                   "limit": 10, "mc_num": 8, "check_greedy": False},
    "resources": {"probe_workers": 1, "probe_shard_size": 16, "gpus_per_worker": 0, "calibration_gpus": 0,
                  "cpus_per_worker": 1, "eval_workers": 1},
}


def load1() -> float:
    return round(os.getloadavg()[0], 2)


def resolve_model(model: str | None, work: Path) -> tuple[str, str]:
    from faircalib.models import zoo_names

    if model:
        return model, "given"
    if "tiny-llada" in zoo_names():
        return "zoo:tiny-llada", "zoo model"
    from faircalib.orchestrator.testing import standin_zoo_model

    kind = ("UNTRAINED random stand-in for zoo:tiny-llada (zoo recipe architecture + tokenizer, random "
            "weights: same compute, meaningless scores)")
    return str(standin_zoo_model(work / "standin-tiny-llada")), kind


# ------------------------------------------------------------------ 1. Stage I with 1 vs 2 probe workers
def probe_run(model: str, model_hash: str, n: int, workers: int, pool=None) -> tuple[float, object]:
    from faircalib.workers.pool import ShardTask, run_sharded
    from faircalib.workers.probe import run_probe_ranges, setup_probe

    from faircalib.probe import PositionPrior, ProbeConfig

    cfg = ProbeConfig.from_dict({**PROBE, "n_samples": n})
    bs = cfg.batch_size
    ranges = [(a, min(a + bs, n)) for a in range(0, n, bs)]
    task = ShardTask(setup=setup_probe, run=run_probe_ranges, name="probe",
                     setup_kwargs={"model": model, "probe_config": cfg.to_dict(), "model_hash": model_hash, "threads": 1})
    t0 = time.perf_counter()
    parts = run_sharded(ranges, task, shard_size=1, n_workers=workers, pool=pool)
    prior = PositionPrior.merge([p for shard in parts for p in shard])
    return time.perf_counter() - t0, prior


def stage1_scaling(model: str, n: int, repeats: int) -> dict:
    import torch

    from faircalib.models import weights_hash

    from faircalib.workers.pool import WarmPool

    model_hash = weights_hash(model)
    order = []
    for r in range(repeats):
        order += [1, 2] if r % 2 == 0 else [2, 1]
    runs, priors = [], {}
    pool = WarmPool()
    t0 = time.perf_counter()
    probe_run(model, model_hash, 32, 2, pool)  # warm both actors (start-up, imports, model load)
    warmup_s = time.perf_counter() - t0
    for workers in order:
        before = load1()
        wall, prior = probe_run(model, model_hash, n, workers, pool)
        runs.append({"workers": workers, "wall_s": round(wall, 2), "load1_before": before, "load1_after": load1()})
        priors.setdefault(workers, prior)
        print(f"[stage1] {workers} worker(s): {wall:.1f}s (load {before} -> {load1()})", file=sys.stderr)
    med = {w: statistics.median(r["wall_s"] for r in runs if r["workers"] == w) for w in (1, 2)}
    same = torch.equal(priors[1].per_sample, priors[2].per_sample) and torch.equal(priors[1].sample_ids,
                                                                                   priors[2].sample_ids)
    pool.shutdown()
    return {"settings": {**PROBE, "n": n, "shards": -(-n // 16), "shard_rows": 16, "threads_per_worker": 1},
            "warm_actors": True, "warmup_s": round(warmup_s, 2),
            "order": order, "runs": runs, "median_wall_s": {"1": round(med[1], 2), "2": round(med[2], 2)},
            "speedup_2_vs_1": round(med[1] / med[2], 3), "priors_identical": bool(same)}


def _ceiling_child(spec: dict) -> None:
    """One plain OS process (no Ray): load the teacher, say "ready", wait for the go file, probe the
    ranges, print the start and end times as one JSON line."""
    import torch

    from faircalib.models import load_dllm
    from faircalib.probe import ProbeConfig, probe_shard

    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    m = load_dllm(spec["model"], device="cpu")
    cfg = ProbeConfig.from_dict({**PROBE, "n_samples": spec["n"]})
    print("ready", flush=True)
    go = Path(spec["go"])
    while not go.exists():
        time.sleep(0.005)
    t0 = time.time()
    for start, stop in spec["ranges"]:
        probe_shard(m.model, m.tokenizer, cfg, start, stop, model_hash=spec["model_hash"], device="cpu")
    print(json.dumps({"t0": t0, "t1": time.time()}), flush=True)


def host_ceiling(model: str, n: int, order: tuple[int, ...] = (1, 2, 2, 1)) -> dict:
    """The host's own 1 -> 2 process speed-up on the same probe work without Ray: what 2 cores allow.
    Each process loads the model, then all start probing together (a go file); a run's wall is from the
    first start to the last finish, so model loading is excluded as it is from the warm-actor Ray figure."""
    import subprocess

    from faircalib.models import weights_hash

    from faircalib.probe import ProbeConfig

    model_hash = weights_hash(model)
    bs = ProbeConfig.from_dict({**PROBE, "n_samples": n}).batch_size
    ranges = [(a, min(a + bs, n)) for a in range(0, n, bs)]
    walls: dict[int, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="fc-ceiling-") as tmp:
        for i, procs in enumerate(order):
            go = Path(tmp) / f"go-{i}"
            ps = [subprocess.Popen([sys.executable, __file__, "--ceiling-child", json.dumps(
                {"model": model, "model_hash": model_hash, "n": n, "ranges": ranges[k::procs], "go": str(go)})],
                stdout=subprocess.PIPE, text=True) for k in range(procs)]
            for p in ps:
                if p.stdout.readline().strip() != "ready":
                    raise RuntimeError(f"host-ceiling child exited with {p.wait()} before it was ready")
            go.touch()
            times = [json.loads(p.stdout.readline()) for p in ps]
            for p in ps:
                p.wait()
            wall = max(t["t1"] for t in times) - min(t["t0"] for t in times)
            walls.setdefault(procs, []).append(round(wall, 2))
            print(f"[ceiling] {procs} plain process(es): {wall:.1f}s (load {load1()})", file=sys.stderr)
    med = {k: statistics.median(v) for k, v in walls.items()}
    return {"what": "the same probe ranges in 1 vs 2 plain processes (no Ray, model load excluded)",
            "wall_s": {str(k): v for k, v in walls.items()}, "speedup_2_vs_1": round(med[1] / med[2], 3)}


# ------------------------------------------------------------------ 2. the same job: library vs service
def job_config(model: str, storage: str, seed: int):
    """The benchmark's job; `seed` sets the probe and evaluation seeds (a new prior and FP baseline)."""
    from faircalib.orchestrator.config import JobConfig

    spec = json.loads(json.dumps(JOB))
    spec["probe"]["seed"] = seed
    spec["evaluation"]["seed"] = seed
    return JobConfig.from_dict({"model": model, **spec, "storage": storage})


def library_job(model: str, out: Path, seed: int = 0) -> dict:
    """The job as plain library calls in this process (1 thread), timed per step, on the job's own
    config objects (the same path the service's workers take)."""
    import torch

    from faircalib.checkpoint import load_quantized, save_quantized
    from faircalib.eval.run import evaluate_models
    from faircalib.models import decoding_defaults, load_dllm, weights_hash
    from faircalib.pipeline import run_method
    from faircalib.probe import probe_prior

    cfg = job_config(model, "file:///unused", seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    steps: dict[str, float] = {}
    t_all = t = time.perf_counter()
    try:
        m = load_dllm(model)
        prior = probe_prior(m.model, m.tokenizer, None, cfg.run.probe, model_hash=weights_hash(model))
        steps["probe"] = time.perf_counter() - t
        t = time.perf_counter()
        q, _ = run_method(m.model, m.tokenizer, cfg.run, prior=prior, inplace=True)
        save_quantized(q, out, tokenizer=m.tokenizer)
        steps["calibrate"] = time.perf_counter() - t
        t = time.perf_counter()
        fp, q = load_dllm(model), load_quantized(out)
        evaluate_models(fp.model, fp.tokenizer, cfg.evaluation, quantized=q.model,
                        decoding=decoding_defaults(model, fp.path), source=model)
        steps["evaluate"] = time.perf_counter() - t
    finally:
        torch.set_num_threads(threads)
    return {"wall_s": round(time.perf_counter() - t_all, 2), "steps_s": {k: round(v, 2) for k, v in steps.items()}}


def service_job(store, sched, model: str, bucket: str, seed: int) -> dict:
    """One job through the service on `sched` (SQLite store, the shared local Ray, the local S3 server)."""
    cfg = job_config(model, f"s3://{bucket}/jobs", seed)
    t0 = time.perf_counter()
    job = store.create_job(cfg)
    sched.run_job(store.claim(sched.id, [job]))
    wall = time.perf_counter() - t0
    row = store.get_job(job)
    if row.state.value != "succeeded":
        raise SystemExit(f"service job {job} {row.state.value}: {row.reason}")
    stages = {s.name: s.output for s in store.stages(job)}
    events = store.events(job)
    to_first = {}
    for st in ("probe", "calibrate", "evaluate"):  # the stage's pool started -> its first progress report
        pool = next((e.ts for e in events if e.stage == st and e.kind == "pool"), None)
        prog = next((e.ts for e in events if e.stage == st and e.kind == "progress"), None)
        if pool and prog:
            to_first[st] = round((prog - pool).total_seconds(), 2)
    warm = [bool(e.data.get("warm")) for e in events if e.kind == "shard_done" and e.data]
    return {"job": job, "wall_s": round(wall, 2), "stages_s": {k: v.get("stage_wall_s") for k, v in stages.items()},
            "pool_to_first_progress_s": to_first, "shards_on_warm_actors": f"{sum(warm)}/{len(warm)}",
            "calibration_compute_s": round(stages["calibrate"].get("calibration_wall_s") or 0.0, 2),
            "fp_baseline": stages["evaluate"].get("fp_baseline"), "prior_cached": stages["probe"].get("cached"),
            "storage_uri": f"{row.storage_uri}/{job}"}


def _same_checkpoint(a: Path, b: Path) -> bool:
    return all(hashlib.sha256((a / f).read_bytes()).digest() == hashlib.sha256((b / f).read_bytes()).digest()
               for f in ("quantized_linears.safetensors", "transforms.safetensors", "fp.safetensors"))


def overhead(model: str, work: Path, db_url: str, bucket: str, ray_init_s: float) -> dict:
    """Job 1 (cold scheduler) and job 2 (warm), each beside its library run."""
    from faircalib.orchestrator.scheduler import Scheduler, SchedulerOptions
    from faircalib.orchestrator.store import JobStore
    from faircalib.service.storage import fetch_tree, open_storage

    store = JobStore(db_url)
    sched = Scheduler(store, options=SchedulerOptions(poll_s=0.1))
    sched.start()
    out = {"job": {**JOB, "model": model}}
    try:
        for seed, label in ((0, "first_job_cold"), (1, "second_job_warm")):
            lib_a = library_job(model, work / f"lib-{seed}a", seed)
            before = load1()
            svc = service_job(store, sched, model, bucket, seed)
            after = load1()
            lib_b = library_job(model, work / f"lib-{seed}b", seed)
            lib = (lib_a["wall_s"] + lib_b["wall_s"]) / 2
            fetch_tree(open_storage(svc["storage_uri"]).child("calibrate", "checkpoint"), work / f"svc-{seed}")
            over = svc["wall_s"] - lib
            out[label] = {"library": {"runs": [lib_a, lib_b], "mean_wall_s": round(lib, 2)}, "service": svc,
                          "load1": {"before": before, "after": after}, "overhead_s": round(over, 2),
                          "overhead_fraction": round(over / svc["wall_s"], 3),
                          "service_over_library": round(svc["wall_s"] / lib, 3),
                          "checkpoints_bit_identical": _same_checkpoint(work / f"svc-{seed}", work / f"lib-{seed}a")}
            print(f"[overhead] {label}: service {svc['wall_s']}s, library {lib:.1f}s, overhead "
                  f"{out[label]['overhead_fraction']:.1%}", file=sys.stderr)
    finally:
        sched.stop()
    cold = out["first_job_cold"]
    out["overhead_fraction_first_job_with_ray_start"] = round(
        (cold["overhead_s"] + ray_init_s) / (cold["service"]["wall_s"] + ray_init_s), 3)
    out["ray_init_s"] = round(ray_init_s, 2)
    return out


SWEEP = {"name": "bench", "base": {
    "probe": {**PROBE, "n_samples": 16}, "calibration": {"data": "builtin:kjv:train", "n": 8, "seq_len": 64,
                                                          "epochs": 1, "batch_size": 4},
    "evaluation": {"tasks": ["fidelity", "faircalib_tasks_mc"], "data": "builtin:kjv:heldout", "n": 4, "seq_len": 64,
                   "limit": 5, "mc_num": 4, "check_greedy": False},
    "resources": {"probe_workers": 1, "probe_shard_size": 16, "gpus_per_worker": 0, "calibration_gpus": 0,
                  "cpus_per_worker": 1, "eval_workers": 1}},
    "grid": {"method": ["faircalib", "rtn"], "bits": ["w4a4", "w4a8", "w8a8"]}}


def sweep_run(model: str, work: Path, bucket: str, max_jobs: int) -> dict:
    """The 6-job sweep on a fresh database through one scheduler with `max_jobs`."""
    from faircalib.orchestrator.config import SweepConfig
    from faircalib.orchestrator.scheduler import Scheduler, SchedulerOptions
    from faircalib.orchestrator.store import JobStore

    spec = json.loads(json.dumps(SWEEP))
    spec["base"].update(model=model, storage=f"s3://{bucket}/sweep-{max_jobs}")
    sweep = SweepConfig.from_dict(spec)
    store = JobStore(f"sqlite:///{work / f'sweep-{max_jobs}.db'}")
    ids = [store.create_job(cfg, sweep_id=f"bench{max_jobs}") for cfg in sweep.jobs]
    before = load1()
    t0 = time.perf_counter()
    sched = Scheduler(store, options=SchedulerOptions(poll_s=0.1, max_jobs=max_jobs))
    sched.run(once=True, job_ids=ids)
    wall = time.perf_counter() - t0
    rows = [store.get_job(j) for j in ids]
    failed = [f"{r.id}: {r.reason}" for r in rows if r.state.value != "succeeded"]
    if failed:
        raise SystemExit(f"sweep (max_jobs {max_jobs}) had failures: {failed}")
    probes = [s.output for j in ids for s in store.stages(j) if s.name == "probe"]
    return {"max_jobs": max_jobs, "jobs": len(ids), "wall_s": round(wall, 2), "peak_jobs_at_once": sched.peak_concurrency,
            "load1": {"before": before, "after": load1()},
            "priors": {"built": sum(not p["cached"] for p in probes), "reused": sum(bool(p["cached"]) for p in probes)},
            "fp_baseline_cache": store.baseline_stats(),
            "job_wall_s": [round((r.finished_at - r.started_at).total_seconds(), 2) for r in rows]}


def sweep_comparison(model: str, work: Path, bucket: str) -> dict:
    runs = {}
    for k in (1, 2):
        runs[str(k)] = sweep_run(model, work, bucket, k)
        print(f"[sweep] max_jobs {k}: {runs[str(k)]['wall_s']}s, FP baseline {runs[str(k)]['fp_baseline_cache']}",
              file=sys.stderr)
    return {"grid": SWEEP["grid"], "runs": runs,
            "speedup_2_vs_1": round(runs["1"]["wall_s"] / runs["2"]["wall_s"], 3)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="Print the JSON result (always printed; kept for the "
                    "benchmarks' common interface).")
    ap.add_argument("--model", default=None, help="Model source (default: zoo:tiny-llada, else a stand-in).")
    ap.add_argument("--probe-n", type=int, default=512, help="Stage I prompts for the scaling runs (16 per shard).")
    ap.add_argument("--repeats", type=int, default=1, help="Scaling runs per worker count (interleaved).")
    ap.add_argument("--ceiling", action="store_true", help="Also time the same probe work in 1 vs 2 plain "
                    "processes (no Ray): the host's own parallel ceiling, beside the Ray figure.")
    ap.add_argument("--skip-overhead", action="store_true")
    ap.add_argument("--skip-sweep", action="store_true")
    ap.add_argument("--out", default=None, help="Also write the JSON here.")
    ap.add_argument("--ceiling-child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.ceiling_child:
        return _ceiling_child(json.loads(a.ceiling_child))

    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import torch

    torch.set_flush_denormal(True)
    work = Path(tempfile.mkdtemp(prefix="fc-bench-service-"))
    os.environ["FAIRCALIB_HOME"] = str(work / "home")
    from faircalib.service.seaweed import SeaweedServer
    from faircalib.service.storage import S3Storage, StorageOptions
    from faircalib.workers.pool import ensure_ray

    t_start = time.perf_counter()
    model, kind = resolve_model(a.model, work)
    result: dict = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0],
                                "torch": torch.__version__, "load1_start": load1(),
                                "note": f"{os.cpu_count()} cores shared with other users: timings include their "
                                        "load; runs are interleaved and the 1-minute load average is recorded "
                                        "around each"},
                    "model": {"source": model, "kind": kind}}
    creds = {"AWS_ACCESS_KEY_ID": "fc-bench", "AWS_SECRET_ACCESS_KEY": "fc-bench-secret-0123"}  # a throwaway server
    with SeaweedServer(work / "seaweed", env=creds) as s3:
        os.environ.update(creds, FAIRCALIB_S3_ENDPOINT=s3.endpoint)  # before Ray starts: its workers inherit them
        bucket = "bench"
        S3Storage(bucket, "", StorageOptions(), endpoint=s3.endpoint).ensure_bucket()
        t0 = time.perf_counter()
        ensure_ray(None, num_cpus=os.cpu_count())
        ray_init_s = time.perf_counter() - t0
        result["ray_init_s"] = round(ray_init_s, 2)
        result["stage1_scaling"] = stage1_scaling(model, a.probe_n, a.repeats)
        if a.ceiling:
            c = result["stage1_host_ceiling"] = host_ceiling(model, a.probe_n)
            c["ray_fraction_of_ceiling"] = round(result["stage1_scaling"]["speedup_2_vs_1"] / c["speedup_2_vs_1"], 3)
        if not a.skip_overhead:
            result["overhead"] = overhead(model, work, f"sqlite:///{work / 'jobs.db'}", bucket, ray_init_s)
        if not a.skip_sweep:
            result["sweep"] = sweep_comparison(model, work, bucket)
    result["machine"]["load1_end"] = load1()
    result["total_s"] = round(time.perf_counter() - t_start, 1)
    text = json.dumps(result, indent=1)
    print(text)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
