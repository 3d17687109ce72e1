"""Real-scale rehearsal (issue 12): every stage at the full LLaDA-8B / Dream-7B width on synthetic
checkpoints (`faircalib models synth`) with 2 and 4 layers, each stage in a fresh subprocess so its peak
memory is its own; per stage the wall time and peak RSS (and the CUDA peak on a GPU), the per-layer slope
between 2 and 4 layers and the extrapolation to the real depth (32 / 28 layers); checkpoint bytes vs the
bf16 model; resident bytes of the loaded quantized model.

    python benchmarks/scale.py --json                                  # both shapes, 2 and 4 layers
    python benchmarks/scale.py --json --like dream-7b --layers 2 --stages probe,flatquant
    python benchmarks/scale.py --json --work /tmp/scale --out benchmarks/results/scale.json

Stages (settings in SETTINGS; small on purpose: the point is shapes, memory and per-token cost):
  load            load_dllm + touch every weight page (the baseline every stage starts from)
  probe           Stage I: n=4 prompts, T = L = 32, batch 4 (the prior is kept for `faircalib`)
  probe_t8        the same with T = 8 steps (probe memory must not grow with T)
  flatquant       Stage II FlatQuant W4A4, 4 x 64 calibration tokens, 1 epoch, + save of the checkpoint
  faircalib       the same with the position prior from `probe`
  quarot          QuaRot (rotation + GPTQ) W4A4 + save
  load_quantized  load_quantized of the FAIR-Calib checkpoint: resident bytes; checkpoint vs bf16 bytes
  lm_eval         lm-eval (faircalib_arith + faircalib_tasks_mc, 2 examples each) on that checkpoint
  service         one service job end to end (SQLite store, local Ray, local S3; 1 probe worker), 2 layers;
                  its workers load the model as float32 (resources.dtype) on a CPU that emulates bf16
                  (faircalib.devices.cpu_bf16_slowdown() > BF16_SLOW), else in its stored bf16

Memory: RSS is sampled every 20 ms from /proc (the service stage sums the whole process tree: driver,
Ray, actors, the S3 server); `peak_over_loaded` = peak RSS - RSS after loading + touching the model, i.e.
the stage's own working memory on top of the model. Weights are memory-mapped bf16 safetensors, so
the loaded model's RSS equals its bytes only after the touch. Results are kept in WORK/partial.json
after every stage (a rerun skips what is done; --redo forces). CPU timings on a shared 2-core machine are
noisy: the 1-minute load average is recorded around each stage, and `cpu_s` (the stage process's CPU
seconds over all its threads) is the load-independent cost (/ threads = the wall time on an idle machine).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LIKE = ("llada-8b", "dream-7b")
FULL_DEPTH = {"llada-8b": 32, "dream-7b": 28}
STAGES = ("load", "probe", "probe_t8", "flatquant", "faircalib", "quarot", "load_quantized", "lm_eval", "service")
SERVICE_LAYERS = 2  # the service job runs at this depth only
PAPER_PEAK_GB_8B = (12, 15)  # FAIR-Calib paper: Stage II peak memory calibrating an 8B model
SETTINGS: dict[str, Any] = {
    "probe": {"n_samples": 4, "steps": 32, "window": 32, "batch_size": 4, "prompts": "builtin:tasks:probe"},
    "probe_t8": {"n_samples": 4, "steps": 8, "window": 32, "batch_size": 4, "prompts": "builtin:tasks:probe"},
    "calib": {"calib_source": "builtin:mix:train", "calib_n": 4, "calib_seq_len": 64, "epochs": 1, "batch_size": 2},
    "lm_eval": {"tasks": ["faircalib_arith", "faircalib_tasks_mc"], "limit": 2, "mc_num": 2, "batch_size": 8,
                "gen_batch_size": 2, "decoding": {"gen_length": 8, "steps": 8}},
    "threads": 2,
}
TINY = {  # --tiny: the same pipeline at a small width (tests, the GPU suite's CPU mode)
    "llada-8b": {"d_model": 64, "n_heads": 4, "n_kv_heads": 4, "mlp_hidden_size": 96},
    "dream-7b": {"hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 96},
}


# ------------------------------------------------------------------------------------------ memory
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _status(pid: int | str = "self") -> dict[str, int]:
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            k, _, v = line.partition(":")
            if k in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                out[k] = int(v.split()[0]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return out


def _descendants(root: int) -> list[int]:
    parent: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parent[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    out, frontier = [], [root]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out += kids
        frontier += kids
    return out


class MemorySampler:
    """Peak RSS (total / anon) of this process, or of its whole process tree, sampled every `period` s."""

    def __init__(self, tree: bool = False, period: float = 0.02):
        self.tree, self.period = tree, period
        self.peak = {"rss": 0, "anon": 0, "tree_rss": 0, "max_process_rss": 0}
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        me = _status()
        self.peak["rss"] = max(self.peak["rss"], me.get("VmRSS", 0))
        self.peak["anon"] = max(self.peak["anon"], me.get("RssAnon", 0))
        if self.tree:
            rss = [me.get("VmRSS", 0)] + [_status(p).get("VmRSS", 0) for p in _descendants(os.getpid())]
            self.peak["tree_rss"] = max(self.peak["tree_rss"], sum(rss))
            self.peak["max_process_rss"] = max(self.peak["max_process_rss"], max(rss))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.period if not self.tree else 0.25)

    def __enter__(self) -> MemorySampler:  # noqa: PYI034
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()
        self.sample()


def rss_now() -> int:
    return _status().get("VmRSS", 0)


def load1() -> float:
    return round(os.getloadavg()[0], 2)


def touch(model) -> int:
    """Fault in every page of every parameter / buffer (memory-mapped weights count in RSS once read);
    returns the model's tensor bytes."""
    import torch

    total = 0
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            if t.numel():
                flat = t.detach().reshape(-1)
                step = max(1, 4096 // t.element_size())
                float(flat[::step].float().sum())
                total += t.numel() * t.element_size()
    return total


def tensor_bytes(model) -> int:
    return sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))


def dir_bytes(path: Path, suffixes: tuple[str, ...] = (".safetensors",)) -> int:
    return sum(p.stat().st_size for p in Path(path).iterdir() if p.is_file() and p.suffix in suffixes)


# ------------------------------------------------------------------------------------------ stages (child side)
def _setup(threads: int):
    import torch

    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return torch


def _load_fp(model_dir: str, device: str) -> tuple[Any, dict]:
    """load_dllm on the host + touch; returns (loaded, facts)."""
    from faircalib.models import load_dllm

    t0 = time.perf_counter()
    loaded = load_dllm(model_dir)
    nbytes = touch(loaded.model)
    return loaded, {"load_s": round(time.perf_counter() - t0, 2), "model_bytes": nbytes,
                    "rss_after_load": rss_now(), "dtype": str(loaded.model.dtype).removeprefix("torch.")}


def _cuda_reset(torch, device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _cuda_peak(torch, device) -> int | None:
    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None


def run_stage(stage: str, model_dir: str, work: Path, device_spec: str, threads: int) -> dict:
    torch = _setup(threads)
    from faircalib.devices import resolve_device

    device = resolve_device(device_spec)
    work.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {"stage": stage, "device": str(device), "threads": threads, "load1_before": load1()}
    base = rss_now()
    with MemorySampler(tree=(stage == "service")) as mem:
        t0 = time.perf_counter()
        if stage == "service":
            out.update(_stage_service(model_dir, work, threads))
        elif stage == "load_quantized":
            out.update(_stage_load_quantized(torch, model_dir, work, device))
        elif stage == "lm_eval":
            out.update(_stage_lm_eval(torch, work, device))
        else:
            loaded, facts = _load_fp(model_dir, device)
            out.update(facts)
            _cuda_reset(torch, device)
            ts = time.perf_counter()
            if stage in ("probe", "probe_t8"):
                out.update(_stage_probe(loaded, SETTINGS[stage], work / f"prior-{stage}", device))
            elif stage in ("flatquant", "faircalib", "quarot"):
                out.update(_stage_quantize(loaded, stage, model_dir, work, device))
            elif stage != "load":
                raise SystemExit(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
            out["stage_s"] = round(time.perf_counter() - ts, 2)
            out["cuda_peak_bytes"] = _cuda_peak(torch, device)
        out["wall_s"] = round(time.perf_counter() - t0, 2)
    ru = resource.getrusage(resource.RUSAGE_SELF)
    out.update(rss_before=base, peak_rss=mem.peak["rss"], peak_rss_anon=mem.peak["anon"],
               vm_hwm=_status().get("VmHWM"), load1_after=load1(),
               cpu_s=round(ru.ru_utime + ru.ru_stime, 2))  # this process's CPU seconds (all threads)
    if "rss_after_load" in out:
        out["peak_over_loaded"] = out["peak_rss"] - out["rss_after_load"]
    if stage == "service":
        out.update(peak_tree_rss=mem.peak["tree_rss"], peak_max_process_rss=mem.peak["max_process_rss"])
    return out


def _stage_probe(loaded, s: dict, dest: Path, device) -> dict:
    from faircalib.probe import ProbeConfig, probe_prior

    cfg = ProbeConfig(prompts=s["prompts"], n_samples=s["n_samples"], steps=s["steps"], window=s["window"],
                      batch_size=s["batch_size"])
    t0 = time.perf_counter()
    prior = probe_prior(loaded.model, loaded.tokenizer, None, cfg, model_hash="scale-benchmark", device=device)
    wall = time.perf_counter() - t0
    prior.save(dest)
    steps = s["steps"] * -(-s["n_samples"] // s["batch_size"])
    return {"settings": s, "probe_s": round(wall, 2), "rollout_steps": steps,
            "s_per_rollout_step": round(wall / steps, 3), "rows_per_s": round(s["n_samples"] / wall, 4),
            "prior_curve": [round(float(x), 4) for x in prior.curve[:4]] + ["..."]}


def _stage_quantize(loaded, method: str, model_dir: str, work: Path, device) -> dict:
    from faircalib.checkpoint import save_quantized
    from faircalib.pipeline import MethodConfig, run_method
    from faircalib.probe import PositionPrior

    c = SETTINGS["calib"]
    prior = None
    if method == "faircalib":
        pdir = work / "prior-probe"
        if not (pdir / "prior.json").is_file():
            raise SystemExit(f"faircalib needs the probe stage's prior in {pdir}; run the probe stage first")
        prior = PositionPrior.load(pdir)
    p = SETTINGS["probe"]
    cfg = MethodConfig.from_dict({
        "method": method, "bits": "w4a4",
        "calibration": {"data": c["calib_source"], "n": c["calib_n"], "seq_len": c["calib_seq_len"],
                        "epochs": c["epochs"], "batch_size": c["batch_size"]},
        "probe": {"prompts": p["prompts"], "n_samples": p["n_samples"], "steps": p["steps"], "window": p["window"],
                  "batch_size": p["batch_size"]}})
    blocks: list[dict] = []

    def progress(e: dict) -> None:
        if e.get("event") == "block_done":
            blocks.append({"block": e["block"], "time_s": round(e["time_s"], 2), "init_loss": e.get("init_loss"),
                           "final_loss": e.get("final_loss"), "rss": rss_now()})

    t0 = time.perf_counter()
    model, _ = run_method(loaded.model, loaded.tokenizer, cfg, prior=prior, progress=progress, device=device,
                             inplace=True)
    q_s = time.perf_counter() - t0
    ck = work / f"ck-{method}"
    t1 = time.perf_counter()
    save_quantized(model, ck, meta={"source": model_dir, "benchmark": "scale"}, tokenizer=loaded.tokenizer)
    save_s = time.perf_counter() - t1
    return {"settings": {**c, "method": method, "bits": "w4a4"}, "quantize_s": round(q_s, 2),
            "save_s": round(save_s, 2), "blocks": blocks, "head_and_embedding":
                getattr(model, "faircalib_quant", {}).get("head_and_embedding"),
            "checkpoint_bytes": dir_bytes(ck), "checkpoint_files": {p.name: p.stat().st_size for p in ck.iterdir()
                                                                     if p.suffix == ".safetensors"}}


def _stage_load_quantized(torch, model_dir: str, work: Path, device) -> dict:
    from faircalib.checkpoint import load_quantized

    ck = work / "ck-faircalib"
    if not ck.is_dir():
        ck = work / "ck-flatquant"
    _cuda_reset(torch, device)
    t0 = time.perf_counter()
    loaded = load_quantized(ck, device=device)
    nbytes = touch(loaded.model)
    load_s = time.perf_counter() - t0
    ids = torch.randint(0, 1000, (1, 16))
    t1 = time.perf_counter()
    with torch.no_grad():
        logits = loaded.model(ids.to(device))
    fwd_s = time.perf_counter() - t1
    return {"checkpoint": ck.name, "load_s": round(load_s, 2), "resident_bytes": nbytes,
            "rss_after_load": rss_now(), "forward_16_tokens_s": round(fwd_s, 3),
            "logits_finite": bool(torch.isfinite(logits).all()), "checkpoint_bytes": dir_bytes(ck),
            "fp_model_bytes_on_disk": dir_bytes(Path(model_dir)), "cuda_peak_bytes": _cuda_peak(torch, device)}


def _stage_lm_eval(torch, work: Path, device) -> dict:
    from faircalib.eval.harness import evaluate_source

    ck = work / "ck-faircalib"
    if not ck.is_dir():
        ck = work / "ck-flatquant"
    s = SETTINGS["lm_eval"]
    _cuda_reset(torch, device)
    res = evaluate_source(str(ck), s["tasks"], device=str(device), decoding=s["decoding"], limit=s["limit"],
                          mc_num=s["mc_num"], batch_size=s["batch_size"], gen_batch_size=s["gen_batch_size"],
                          check_greedy=False, bootstrap_iters=0, progress=False)
    return {"checkpoint": ck.name, "settings": s, "load_s": round(res["load_s"], 2),
            "tasks": {t: {"wall_s": round(v.get("wall_s") or 0.0, 2), "n_samples": v.get("n_samples"),
                          "metrics": v.get("metrics")} for t, v in res["tasks"].items()},
            "eval_wall_s": round(res["wall_s"], 2), "cuda_peak_bytes": _cuda_peak(torch, device)}


def _stage_service(model_dir: str, work: Path, threads: int) -> dict:
    """One FAIR-Calib job through the service (like benchmarks/service.py's service_job)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ["FAIRCALIB_HOME"] = str(work / "service-home")
    from faircalib.orchestrator.config import JobConfig
    from faircalib.orchestrator.scheduler import Scheduler, SchedulerOptions
    from faircalib.orchestrator.store import JobStore
    from faircalib.service.seaweed import SeaweedServer
    from faircalib.service.storage import S3Storage, StorageOptions
    from faircalib.workers.pool import ensure_ray

    from faircalib.devices import BF16_SLOW, cpu_bf16_slowdown

    p, c, e = SETTINGS["probe"], SETTINGS["calib"], SETTINGS["lm_eval"]
    # the job's workers load the bf16 model as float32 on a CPU that emulates bf16 (~20x slower there)
    slow = cpu_bf16_slowdown()
    dtype = "float32" if slow > BF16_SLOW else "auto"
    spec = {"name": "scale-rehearsal", "model": model_dir, "method": "faircalib", "bits": "w4a4",
            "probe": {"prompts": p["prompts"], "n_samples": p["n_samples"], "steps": p["steps"],
                      "window": p["window"], "seed": 0},
            "calibration": {"data": c["calib_source"], "n": c["calib_n"], "seq_len": c["calib_seq_len"],
                            "epochs": c["epochs"], "batch_size": c["batch_size"], "data_seed": 0},
            "evaluation": {"tasks": ["fidelity", "faircalib_tasks_mc"], "data": "builtin:kjv:heldout", "n": 2,
                           "seq_len": 32, "limit": e["limit"], "mc_num": e["mc_num"], "check_greedy": False,
                           "decoding": e["decoding"]},
            "resources": {"probe_workers": 1, "probe_shard_size": p["batch_size"], "gpus_per_worker": 0,
                          "calibration_gpus": 0, "cpus_per_worker": threads, "eval_workers": 1, "max_retries": 0,
                          "dtype": dtype}}
    creds = {"AWS_ACCESS_KEY_ID": "fc-scale", "AWS_SECRET_ACCESS_KEY": "fc-scale-secret-0123"}
    t0 = time.perf_counter()
    with SeaweedServer(work / "seaweed", env=creds) as s3:
        os.environ.update(creds, FAIRCALIB_S3_ENDPOINT=s3.endpoint)  # before Ray starts: its workers inherit them
        S3Storage("scale", "", StorageOptions(), endpoint=s3.endpoint).ensure_bucket()
        ensure_ray(None, num_cpus=max(2, threads))
        store = JobStore(f"sqlite:///{work / 'jobs.db'}")
        cfg = JobConfig.from_dict({**spec, "storage": "s3://scale/jobs"})
        job = store.create_job(cfg)
        tj = time.perf_counter()
        Scheduler(store, options=SchedulerOptions(poll_s=0.2)).run(once=True, job_ids=[job])
        job_s = time.perf_counter() - tj
        row = store.get_job(job)
        stages = {st.name: st.output for st in store.stages(job)}
        import ray

        ray.shutdown()
    out = {"job_state": row.state.value, "reason": row.reason, "job_s": round(job_s, 2),
           "setup_s": round(tj - t0, 2),
           "stages_s": {k: (v or {}).get("stage_wall_s") for k, v in stages.items()},
           "checkpoint_bytes": (stages.get("calibrate") or {}).get("checkpoint_bytes"), "settings": spec,
           "dtype": dtype, "cpu_bf16_slowdown": round(slow, 1)}
    ev = stages.get("evaluate") or {}
    out["evaluate_keys"] = sorted(ev)[:20]
    return out


# ------------------------------------------------------------------------------------------ parent side
def child(stage: str, model_dir: Path, work: Path, device: str, threads: int, timeout_s: int) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--stage", stage, "--model", str(model_dir),
           "--work", str(work), "--device", device, "--threads", str(threads)]
    t0 = time.perf_counter()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=str(ROOT), check=False)
    except subprocess.TimeoutExpired:
        return {"stage": stage, "error": f"timed out after {timeout_s}s", "wall_s": round(time.perf_counter() - t0)}
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    if r.returncode != 0 or not lines:
        tail = (r.stderr or r.stdout)[-2000:]
        return {"stage": stage, "error": f"exit {r.returncode}", "stderr_tail": tail,
                "wall_s": round(time.perf_counter() - t0, 2)}
    return json.loads(lines[-1])


def ensure_model(like: str, layers: int, models: Path, tiny: bool) -> tuple[Path, dict]:
    from faircalib.models import inspect_model, write_synthetic

    d = models / f"{like}-{layers}{'-tiny' if tiny else ''}"
    t0 = time.perf_counter()
    made = False
    if not (d / "model.safetensors.index.json").is_file():
        write_synthetic(like, layers, d, overrides=TINY[like] if tiny else None,
                        max_shard_bytes=(2 << 30) if not tiny else (4 << 20))
        made = True
    info = inspect_model(d)
    return d, {"path": str(d), "synth_s": round(time.perf_counter() - t0, 1) if made else None,
               **{k: info[k] for k in ("layers", "d_model", "d_ff", "n_heads", "n_kv_heads", "vocab_size",
                                       "parameters", "weight_bytes", "shards", "dtype", "mask_token_id")}}


def _gb(x: float | None) -> float | None:
    return None if x is None else round(x / 2 ** 30, 3)


def _load_of(r: dict) -> float:
    """Mean 1-minute load average around a stage (0 when not recorded)."""
    xs = [x for x in (r.get("load1_before"), r.get("load1_after")) if x is not None]
    return sum(xs) / len(xs) if xs else 0.0


def _loads_comparable(ra: dict, rb: dict) -> bool:
    """Whether two stage runs' wall times can be differenced: their loads differ by less than 1.0 or by less
    than half the smaller one (on a shared machine a busier neighbour slows a run by its share)."""
    la, lb = _load_of(ra), _load_of(rb)
    return abs(la - lb) < max(1.0, 0.5 * min(la, lb))


def summarize(like: str, runs: dict[int, dict], models: dict[int, dict]) -> dict:
    """Per stage: time and memory at each depth, per-layer slope, extrapolation to the full depth."""
    depths = sorted(runs)
    full = FULL_DEPTH[like]
    out: dict[str, Any] = {"full_depth": full, "stages": {}}
    for stage in STAGES:
        rows = {L: runs[L].get(stage) for L in depths if runs[L].get(stage)}
        if not rows:
            continue
        ok = {L: r for L, r in rows.items() if "error" not in r}
        entry: dict[str, Any] = {"per_depth": {L: {
            "wall_s": r.get("wall_s"), "stage_s": r.get("stage_s"), "cpu_s": r.get("cpu_s"),
            "peak_rss_gb": _gb(r.get("peak_rss")),
            "peak_over_loaded_gb": _gb(r.get("peak_over_loaded")), "cuda_peak_gb": _gb(r.get("cuda_peak_bytes")),
            "peak_tree_rss_gb": _gb(r.get("peak_tree_rss")), "load1": [r.get("load1_before"), r.get("load1_after")],
            **({"error": r["error"]} if "error" in r else {})} for L, r in rows.items()}}
        if len(ok) >= 2:
            a, b = min(ok), max(ok)
            walls_comparable = _loads_comparable(ok[a], ok[b])
            if not walls_comparable:
                entry["wall_extrapolation"] = (
                    f"omitted: the {a}- and {b}-layer runs saw different machine load (load1 {_load_of(ok[a]):.1f} vs "
                    f"{_load_of(ok[b]):.1f}), so their wall-time difference is not a per-layer cost; cpu_s is")
            for key in ("stage_s", "wall_s", "cpu_s", "peak_rss", "peak_over_loaded"):
                va, vb = ok[a].get(key), ok[b].get(key)
                if va is None or vb is None or (key in ("stage_s", "wall_s") and not walls_comparable):
                    continue
                slope = (vb - va) / (b - a)
                extra = va + slope * (full - a)
                scale = (lambda v: round(v, 2)) if key.endswith("_s") else _gb
                entry[f"{key}_per_layer"] = scale(slope)
                entry[f"{key}_at_{full}_layers"] = scale(extra)
                if key == "peak_over_loaded" and va > 0:
                    entry["peak_over_loaded_growth_2_to_4"] = round(vb / va - 1, 3)
        out["stages"][stage] = entry
    # checkpoint: measured bytes per depth, slope, extrapolation; vs the bf16 model
    ck = {L: runs[L].get("load_quantized") for L in depths}
    ck = {L: r for L, r in ck.items() if r and "error" not in r}
    if ck:
        rows = {L: {"checkpoint_bytes": r["checkpoint_bytes"], "fp_bf16_bytes": r["fp_model_bytes_on_disk"],
                    "ratio": round(r["fp_model_bytes_on_disk"] / r["checkpoint_bytes"], 3),
                    "resident_bytes": r["resident_bytes"], "resident_gb": _gb(r["resident_bytes"]),
                    "rss_after_load_gb": _gb(r["rss_after_load"])} for L, r in ck.items()}
        entry = {"per_depth": rows}
        if len(rows) >= 2:
            a, b = min(rows), max(rows)
            for key in ("checkpoint_bytes", "fp_bf16_bytes", "resident_bytes"):
                slope = (rows[b][key] - rows[a][key]) / (b - a)
                entry[f"{key}_at_{full}_layers"] = int(rows[a][key] + slope * (full - a))
            entry[f"ratio_at_{full}_layers"] = round(entry[f"fp_bf16_bytes_at_{full}_layers"]
                                                     / entry[f"checkpoint_bytes_at_{full}_layers"], 3)
        from faircalib.checkpoint import checkpoint_bytes
        from faircalib.models import parse_config, synth_config
        from faircalib.quant import QuantConfig

        cfg = parse_config(synth_config(like, full))
        formula = checkpoint_bytes(cfg, QuantConfig(method="faircalib"))
        entry["formula_full_depth"] = {"fp_bytes": formula["fp_bytes"], "quant_bytes": formula["quant_bytes"],
                                       "ratio": round(formula["ratio"], 3), "breakdown": formula["breakdown"]}
        entry["stays_fp"] = ("norm weights (bf16), Dream's q/k/v biases (float32), per-channel weight scales and "
                             "activation clips (float32), FlatQuant online transforms diag/P1/P2 (float32); "
                             "the LM head's input activations (the head is int8 weight-only); the embedding and "
                             "head weights are int8 per row + float32 row scales (QuantConfig head_bits / "
                             "embed_bits = 8)")
        out["checkpoint"] = entry
    st = out["stages"].get("flatquant") or {}
    if f"peak_rss_at_{full}_layers" in st:
        out["paper_comparison"] = {
            "paper_stage2_peak_gb_8b": list(PAPER_PEAK_GB_8B),
            "host_peak_rss_gb_extrapolated": st[f"peak_rss_at_{full}_layers"],
            "note": ("host RSS on CPU: the whole bf16 model stays on the host (streaming) plus one block's "
                     "working set; the paper's figure is the GPU peak, which here is one block + its batch "
                     "(measured by benchmarks/gpu_suite.sh on a CUDA machine)")}
    out["models"] = models
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="Print the JSON result (always printed).")
    ap.add_argument("--like", default=",".join(LIKE), help="Shapes: llada-8b,dream-7b.")
    ap.add_argument("--layers", default="2,4", help="Depths to run (the slope needs two).")
    ap.add_argument("--stages", default=",".join(STAGES), help="Subset of: " + ", ".join(STAGES))
    ap.add_argument("--work", default=None, help="Work directory (models, checkpoints, partial results).")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ap.add_argument("--threads", type=int, default=SETTINGS["threads"])
    ap.add_argument("--timeout", type=int, default=7200, help="Seconds per stage.")
    ap.add_argument("--tiny", action="store_true", help="Small width (same pipeline): for tests.")
    ap.add_argument("--redo", action="store_true", help="Rerun stages already in WORK/partial.json.")
    ap.add_argument("--out", default=None, help="Also write the JSON here.")
    ap.add_argument("--stage", default=None, help=argparse.SUPPRESS)  # child mode
    ap.add_argument("--model", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)

    if a.stage:  # child: one stage, one JSON line
        res = run_stage(a.stage, a.model, Path(a.work), a.device, a.threads)
        print(json.dumps(res))
        return res

    work = Path(a.work or tempfile.mkdtemp(prefix="fc-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    partial_path = work / "partial.json"
    partial: dict = json.loads(partial_path.read_text()) if partial_path.is_file() else {}
    likes = [s for s in a.like.split(",") if s]
    depths = [int(x) for x in a.layers.split(",") if x]
    stages = [s for s in a.stages.split(",") if s]
    bad = [s for s in stages if s not in STAGES] + [s for s in likes if s not in LIKE]
    if bad:
        raise SystemExit(f"unknown stage/shape {bad}; stages: {', '.join(STAGES)}; shapes: {', '.join(LIKE)}")
    t_start = time.perf_counter()
    for like in likes:
        for L in depths:
            model_dir, minfo = ensure_model(like, L, work / "models", a.tiny)
            key = f"{like}/{L}"
            runs = partial.setdefault(key, {"model": minfo, "stages": {}})
            runs["model"] = {**minfo, "synth_s": runs["model"].get("synth_s") or minfo["synth_s"]}
            for stage in stages:
                if stage == "service" and L != SERVICE_LAYERS:
                    continue
                done = runs["stages"].get(stage)
                if done and "error" not in done and not a.redo:
                    continue
                print(f"[scale] {key} {stage} (load {load1()}) ...", file=sys.stderr, flush=True)
                res = child(stage, model_dir, work / "runs" / f"{like}-{L}", a.device, a.threads, a.timeout)
                runs["stages"][stage] = res
                msg = res.get("error") or f"{res.get('wall_s')}s, peak RSS {_gb(res.get('peak_rss'))} GB"
                print(f"[scale] {key} {stage}: {msg}", file=sys.stderr, flush=True)
                partial_path.write_text(json.dumps(partial, indent=1))
    import torch

    result: dict[str, Any] = {
        "benchmark": "scale", "tiny": a.tiny, "settings": SETTINGS,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0],
                    "torch": torch.__version__, "cuda": torch.cuda.is_available(),
                    "device_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
                    "mem_total_gb": round(os.sysconf("SC_PHYS_PAGES") * _PAGE / 2 ** 30, 1),
                    "note": "2 cores shared with other jobs (see load1 per stage): times are upper bounds"},
        "shapes": {}, "raw": partial, "total_s": round(time.perf_counter() - t_start, 1)}
    for like in likes:
        runs = {L: partial[f"{like}/{L}"]["stages"] for L in depths if f"{like}/{L}" in partial}
        models = {L: partial[f"{like}/{L}"]["model"] for L in depths if f"{like}/{L}" in partial}
        result["shapes"][like] = summarize(like, runs, models)
    text = json.dumps(result, indent=1, default=str)
    print(text)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
