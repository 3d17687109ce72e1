"""Full jobs on the real library with the shared Ray and SQLite: `faircalib quickstart` (FAIR-Calib, probe
-> calibrate -> evaluate -> upload, on the embedded local SeaweedFS it starts) on a tiny LLaDA: the
service's prior equals the library's single-pass Stage I prior bit for bit (sharded over 2 probe actors);
the fetched checkpoint is verified and `load_quantized` runs it, reproducing the job's fidelity numbers
and its lm-eval task scores (FP and W4A4, run by the eval actor) exactly, and its checkpoint equals
`run_method`'s with the same MethodConfig and prior bit for bit. FlatQuant W4A8 on a SigV4 SeaweedFS
bucket: a scheduler killed mid-calibration resumes at the next block, and the checkpoint equals an
uninterrupted `run_method` bit for bit. (Prior-cache reuse across jobs: test_priors.py.)"""
from __future__ import annotations

import json

import pytest
import torch
import yaml
from click.testing import CliRunner
from faircalib.orchestrator.cli import main
from faircalib.orchestrator.store import JobStore

PROBE = {"n_samples": 32, "steps": 8, "window": 8, "seed": 1}


def _run(*args):
    res = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output


def _job(tmp_path, model, bucket, **over):
    d = {"model": str(model), "method": "faircalib", "bits": "w4a4", "storage": f"s3://{bucket}/jobs",
         "probe": PROBE, "calibration": {"data": "builtin:kjv:train", "n": 4, "seq_len": 32, "epochs": 1},
         "evaluation": {"n": 2, "seq_len": 24, "tasks": ["fidelity", "faircalib_tasks_mc"], "limit": 2, "mc_num": 2,
                        "check_greedy": False},
         "resources": {"probe_workers": 2, "probe_shard_size": 16, "gpus_per_worker": 0, "calibration_gpus": 0}}
    d.update(over)
    p = tmp_path / f"{d['method']}-{d['bits']}.yaml"
    p.write_text(yaml.safe_dump(d))
    return p


def _quickstart_at_test_size(monkeypatch) -> None:
    """`faircalib quickstart`'s built-in FAIR-Calib W4A4 job with test-size settings (2 probe shards of 16
    prompts on 2 probe actors, 4 x 32 calibration tokens, tiny evaluations)."""
    from faircalib.orchestrator import quickstart

    real = quickstart.quickstart_spec

    def small(model):
        spec = real(model)
        spec["probe"].update(PROBE)
        spec["calibration"].update(n=4, seq_len=32, epochs=1)
        spec["evaluation"].update(tasks=["fidelity", "faircalib_tasks_mc"], n=2, seq_len=24, limit=2, mc_num=2,
                                  check_greedy=False)
        spec["resources"].update(gpus_per_worker=0, calibration_gpus=0)
        return spec

    monkeypatch.setattr(quickstart, "quickstart_spec", small)


def test_quickstart_runs_a_full_faircalib_job_end_to_end(ray_session, tiny_model_dir, tmp_path, sqlite_url,
                                                         monkeypatch):
    """`faircalib quickstart` with no S3 configuration: starts the local SeaweedFS, runs only its own job
    (an older queued job is left alone) probe -> calibrate -> evaluate -> upload on SQLite + local Ray,
    prints the FP vs W4A4 table and the fetch command, stops the server it started. After `storage up`
    (same data): `fetch` verifies every object; the prior equals the library's single pass bit for bit;
    the checkpoint loads and reproduces the job's fidelity numbers and lm-eval scores exactly."""
    from faircalib.orchestrator.config import JobConfig
    from faircalib.service.seaweed import free_port_pair, local_state
    from faircalib.service.storage import fetch_tree, open_storage

    from faircalib.checkpoint import load_quantized, save_quantized
    from faircalib.data import sample_token_sequences
    from faircalib.eval import compare_to_reference
    from faircalib.eval.harness import run_lm_eval
    from faircalib.models import load_dllm
    from faircalib.pipeline import run_method
    from faircalib.probe import PositionPrior, ProbeConfig, probe_prior

    _quickstart_at_test_size(monkeypatch)
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({"model": str(tiny_model_dir), "method": "fp", "storage": f"file://{tmp_path}/a"}))
    other = _run("submit", other, "--db", sqlite_url).strip()
    shown = yaml.safe_load(_run("quickstart", "--model", tiny_model_dir, "--show-job"))
    assert (shown["method"], shown["model"], shown["probe"]["n_samples"]) == ("faircalib", str(tiny_model_dir), 32)
    assert local_state() is None
    out = _run("quickstart", "--model", tiny_model_dir, "--db", sqlite_url)
    assert "(started now); artifacts under s3://faircalib/jobs" in out
    store = JobStore(sqlite_url)
    [row] = [r for r in store.list_jobs() if r.id != other]
    job = row.id
    assert row.state.value == "succeeded", row.reason
    assert store.get_job(other).state.value == "queued"
    assert f"job {job}: succeeded" in out and "faircalib W4A4 vs FP" in out and "faircalib_tasks_mc" in out
    assert f"artifacts  s3://faircalib/jobs/{job}/" in out
    assert f"faircalib storage up && faircalib fetch {job} ./{job}" in out
    assert local_state() is None  # the server it started is stopped again
    stages = {s.name: s.output for s in store.stages(job)}
    assert list(stages) == ["probe", "calibrate", "evaluate", "upload"]
    assert stages["probe"]["cached"] is False and stages["probe"]["shards"] == 2
    assert row.prior_key == stages["probe"]["prior_key"]
    fid, mc = row.results["metrics"]["fidelity"], row.results["metrics"]["faircalib_tasks_mc"]
    assert f"{fid['fp']['nll']:.4f}" in out and f"{fid['quantized']['kl_to_ref']:.4f}" in out

    up = _run("storage", "up", "--port", free_port_pair())
    try:
        assert "anonymous" in up
        pid = json.loads(_run("storage", "status", "--json"))["local_server"]["pid"]
        assert f"(pid {pid}," in _run("storage", "up")  # idempotent: the same server
        assert "all sha256 verified" in _run("fetch", job, tmp_path / "out", "--db", sqlite_url)
        fetch_tree(open_storage(stages["probe"]["uri"]), tmp_path / "prior")
        logs = _run("logs", job, "--db", sqlite_url)
        assert "preflight" in logs and "probe: 2/2 shards done" in logs and "running -> succeeded" in logs
    finally:
        assert _run("storage", "down").strip() == "stopped"

    # Stage I through the service (2 probe actors) == the library's single pass, exactly
    service_prior = PositionPrior.load(tmp_path / "prior")
    m = load_dllm(tiny_model_dir)
    ref = probe_prior(m.model, m.tokenizer, None, ProbeConfig(n_samples=32, steps=8, window=8, seed=1))
    assert torch.equal(service_prior.per_sample, ref.per_sample)
    assert torch.equal(service_prior.sample_ids, torch.arange(32))

    # the fetched checkpoint is verified, loads, and reproduces the job's fidelity numbers
    ckpt = tmp_path / "out/calibrate/checkpoint"
    q = load_quantized(ckpt)
    ids = sample_token_sequences(m.tokenizer, "builtin:kjv:heldout", 2, 24, seed=0)
    direct = compare_to_reference(q.model, ids, ref=m.model, seed=0)
    assert fid["quantized"]["kl_to_ref"] == pytest.approx(direct.kl_to_ref, rel=1e-4)
    assert fid["quantized"]["nll"] == pytest.approx(direct.nll, rel=1e-5)
    assert fid["fp"]["nll"] == pytest.approx(compare_to_reference(m.model, ids, seed=0).nll, rel=1e-5)
    assert fid["quantized"]["kl_to_ref"] > 0 and 0 < fid["quantized"]["top1_agree"] <= 1

    # the lm-eval task through the eval actor == run_lm_eval on the same models in this process
    kw = {"limit": 2, "mc_num": 2, "check_greedy": False, "progress": False}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the eval actor (cpus_per_worker 1)
    for variant, model in (("fp", m.model), ("quantized", q.model)):
        lib = run_lm_eval(model, m.tokenizer, ["faircalib_tasks_mc"], **kw)["tasks"]["faircalib_tasks_mc"]
        got = {k: v for k, v in mc[variant].items() if k not in ("wall_s", "n_samples")}
        assert got == pytest.approx(lib["metrics"]), variant
        assert mc[variant]["n_samples"] == 2 and mc[variant]["wall_s"] > 0
    torch.set_num_threads(threads)
    results = json.loads((tmp_path / "out/evaluate/results.json").read_text())
    assert results["metrics"] == row.results["metrics"]
    assert results["lm_eval"]["faircalib_tasks_mc"]["quantized"]["model"]["quantized"]["method"] == "faircalib"
    assert "| faircalib_tasks_mc | acc |" in (tmp_path / "out/evaluate/report.md").read_text()
    assert not (tmp_path / "out/evaluate/_checkpoint").exists()  # the fetched checkpoint is not re-uploaded
    assert json.loads((tmp_path / "out/job.json").read_text())["config"]["labels"] == {"example": "quickstart"}
    # the service's checkpoint == run_method with the job's own MethodConfig and the same prior, bit for bit
    run = JobConfig.from_dict(json.loads((tmp_path / "out/job.json").read_text())["config"]).run
    torch.set_num_threads(1)  # as the calibration actor
    lib, _ = run_method(m.model, m.tokenizer, run, prior=service_prior)
    torch.set_num_threads(threads)
    _same_tensors(ckpt, save_quantized(lib, tmp_path / "lib"))
    record = json.loads((ckpt / "quant_config.json").read_text())
    assert (record["method"], record["w_bits"], record["a_bits"]) == ("faircalib", 4, 4)
    assert record["prior_hash"] is not None
    names = {a["name"] for a in store.artifacts(job)}
    assert {"calibrate/checkpoint/quant_config.json", "calibrate/checkpoint/manifest.json",
            "calibrate/state/block_0001.json", "evaluate/results.json", "evaluate/report.md",
            "_manifest.json"} <= names


def test_scheduler_killed_mid_calibration_resumes_at_next_block(ray_session, s3_env, tiny_model_dir, tmp_path,
                                                                 sqlite_url):
    """A scheduler process (joined to the shared Ray) is SIGKILLed after calibration block 0 finished;
    the next scheduler requeues the job, the calibration actor fetches the uploaded block state and
    resumes at block 1, and the checkpoint's tensors are bit-identical to an uninterrupted run."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    import ray
    from faircalib.orchestrator.config import load_job_file
    from faircalib.orchestrator.scheduler import Scheduler, SchedulerOptions

    from faircalib.checkpoint import save_quantized
    from faircalib.models import load_dllm
    from faircalib.pipeline import run_method

    calib = {"data": "builtin:kjv:train", "n": 8, "seq_len": 48, "epochs": 30, "batch_size": 4, "data_seed": 2}
    p = _job(tmp_path, tiny_model_dir, s3_env, method="flatquant", bits="w4a8", seed=3, calibration=calib,
             evaluation={"n": 2, "seq_len": 24})
    store = JobStore(sqlite_url)
    job = _run("submit", p, "--db", sqlite_url).strip()
    exe = Path(sys.executable).with_name("faircalib")
    gcs = ray.get_runtime_context().gcs_address
    proc = subprocess.Popen([str(exe), "run", "--once", "--ray-address", gcs, "--db", sqlite_url, "--lease-s", "2",
                             "--heartbeat-s", "0.5"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 240
        while not any(e.message.startswith("block 1/2 done") for e in store.events(job)):
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "calibration did not reach block 1"
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # mid-calibration: block 0 done and uploaded, block 1 running
        proc.wait(10)
    assert not any(e.message.startswith("block 2/2 done") for e in store.events(job))
    time.sleep(2.5)  # the dead scheduler's lease runs out
    sched = Scheduler(store, options=SchedulerOptions(lease_s=2, poll_s=0.05))
    assert sched.start() == [job]
    sched.run(once=True)
    row = store.get_job(job)
    assert row.state.value == "succeeded", row.reason
    msgs = [e.message for e in store.events(job)]
    assert any(m.startswith("resuming from s3://") for m in msgs)
    assert "block 1/2 done (resumed)" in msgs  # block 0 came from the uploaded state, not recomputed
    assert any(m.startswith("block 2/2 done, loss") for m in msgs), msgs  # block 1 was really recomputed

    # the uninterrupted run: run_method with the job file's MethodConfig, in-process (1 thread, as the
    # actor): identical tensors; and the W4A8 setting really reached the checkpoint
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    m = load_dllm(tiny_model_dir)
    ref_model, _ = run_method(m.model, m.tokenizer, load_job_file(p).run)
    ref = save_quantized(ref_model, tmp_path / "ref")
    torch.set_num_threads(threads)
    _run("fetch", job, tmp_path / "out", "--db", sqlite_url)
    got = tmp_path / "out/calibrate/checkpoint"
    _same_tensors(got, ref)
    record = json.loads((got / "quant_config.json").read_text())
    assert (record["method"], record["w_bits"], record["a_bits"]) == ("flatquant", 4, 8)
    assert row.results["metrics"]["fidelity"]["quantized"]["kl_to_ref"] > 0


def _same_tensors(a, b) -> None:
    import hashlib

    for f in ("quantized_linears.safetensors", "transforms.safetensors", "fp.safetensors"):
        assert hashlib.sha256((a / f).read_bytes()).digest() == hashlib.sha256((b / f).read_bytes()).digest(), f


def test_a_warm_scheduler_reuses_its_workers_and_the_fp_baseline(ray_session, tiny_model_dir, tmp_path, sqlite_url,
                                                                 job_dict):
    """Two FP evaluations of one model with the same settings on one scheduler: the second job's eval
    runs on the first job's (warm) actor with its state, its FP fidelity comes from the FP baseline
    cache (one hit) and equals the first job's; a third job with other fidelity settings misses."""
    from faircalib.orchestrator.config import JobConfig
    from faircalib.orchestrator.scheduler import Scheduler, SchedulerOptions

    store = JobStore(sqlite_url)
    spec = job_dict(tiny_model_dir, f"file://{tmp_path / 'art'}")
    ids = [store.create_job(JobConfig.from_dict(spec)) for _ in range(2)]
    ids.append(store.create_job(JobConfig.from_dict({**spec, "evaluation": {"n": 3, "seq_len": 24}})))
    sched = Scheduler(store, options=SchedulerOptions(poll_s=0.05, max_jobs=1))
    assert sched.run(once=True) == ids
    rows = [store.get_job(j) for j in ids]
    assert [r.state.value for r in rows] == ["succeeded"] * 3, [r.reason for r in rows]
    outs = [next(s.output for s in store.stages(j) if s.name == "evaluate") for j in ids]
    assert [o["fp_baseline"] for o in outs] == [{"cached": [], "computed": ["fidelity"]},
                                                {"cached": ["fidelity"], "computed": []},
                                                {"cached": [], "computed": ["fidelity"]}]
    assert rows[1].results["metrics"]["fidelity"]["fp"] == rows[0].results["metrics"]["fidelity"]["fp"]
    assert store.baseline_stats() == {"entries": 2, "hits": 1}
    done = [[e.data for e in store.events(j) if e.kind == "shard_done"] for j in ids]
    assert done[0][0]["pid"] == done[1][0]["pid"] and done[1][0]["warm"] is True  # the same warm actor
    assert done[2][0]["pid"] == done[0][0]["pid"]  # other settings: a new state, the same process


def test_resources_dtype_reaches_every_worker(ray_session, tiny_model_dir, tmp_path, sqlite_url, job_dict):
    """resources.dtype: bfloat16 on the float32 test model: the calibrate actor quantizes a bf16 model (the
    checkpoint records fp_dtype bfloat16), the eval actor's FP model is bf16 too, and its FP baseline is
    keyed apart from the stored-dtype job's (computed, not taken from that job's cache entry)."""
    from faircalib.orchestrator.config import JobConfig
    from faircalib.orchestrator.scheduler import Scheduler, SchedulerOptions

    store = JobStore(sqlite_url)
    base = job_dict(tiny_model_dir, f"file://{tmp_path / 'art'}", method="rtn")
    base["resources"]["calibration_gpus"] = 0
    half = {**base, "resources": {**base["resources"], "dtype": "bfloat16"}}
    ids = [store.create_job(JobConfig.from_dict(s)) for s in (base, half)]
    assert Scheduler(store, options=SchedulerOptions(poll_s=0.05, max_jobs=1)).run(once=True) == ids
    rows = [store.get_job(j) for j in ids]
    assert [r.state.value for r in rows] == ["succeeded"] * 2, [r.reason for r in rows]
    records = [json.loads((tmp_path / "art" / j / "calibrate" / "checkpoint" / "quant_config.json").read_text())
               for j in ids]
    assert [r["fp_dtype"] for r in records] == ["float32", "bfloat16"]
    outs = [next(s.output for s in store.stages(j) if s.name == "evaluate") for j in ids]
    assert [o["fp_baseline"]["computed"] for o in outs] == [["fidelity"], ["fidelity"]]
    fp = [r.results["metrics"]["fidelity"]["fp"] for r in rows]
    assert fp[0] != fp[1]  # a bf16 teacher scores differently from the float32 one on the same weights
