"""The prior cache: jobs with equal prior keys share one prior, built once even when two schedulers
run such jobs at the same time; the others wait for it and fetch it (checksums verified)."""
from __future__ import annotations

import hashlib
import threading
from collections import Counter

import torch
from faircalib.orchestrator.config import JobConfig
from faircalib.orchestrator.priors import job_prior_key, obtain_prior
from faircalib.orchestrator.scheduler import Scheduler, SchedulerOptions
from faircalib.orchestrator.stages import StageRegistry, StageResult, StageSpec
from faircalib.orchestrator.store import JobStore
from safetensors.torch import load_file, save_file


def test_the_job_prior_key_is_the_librarys_and_covers_every_probe_setting(tiny_model_dir):
    """The service keys its cache with the library's prior key: every probe setting and the model weights
    change it; Stage II settings (the floor, the calibration data, the method's bits) do not."""
    from faircalib.models import load_dllm
    from faircalib.probe import probe_prior

    job = {"model": str(tiny_model_dir), "probe": {"n_samples": 4, "steps": 4, "window": 4, "batch_size": 4}}
    base = job_prior_key(JobConfig.from_dict(job))
    m = load_dllm(tiny_model_dir)
    from faircalib.models import weights_hash

    prior = probe_prior(m.model, m.tokenizer, None, JobConfig.from_dict(job).run.probe,
                        model_hash=weights_hash(tiny_model_dir))
    assert prior.cache_key() == base  # the key the probe stage will produce, known before probing
    for stage2 in ({"calibration": {"floor": 0.5}}, {"calibration": {"floor": 0.0, "data": "builtin:kjv:train"}},
                   {"bits": "w3a4"}, {"seed": 4}):
        assert job_prior_key(JobConfig.from_dict({**job, **stage2})) == base, stage2  # floor: not in the key
    for change in ({"n_samples": 8}, {"steps": 2}, {"window": 2, "steps": 2}, {"seed": 1}, {"batch_size": 2},
                   {"prompts": "builtin:tasks:train"}, {"prior": {"schedule": "late"}}, {"prior": {"gamma": 3.0}},
                   {"prior": {"beta": 0.0}}, {"prior": {"reliability": "margin"}}, {"prior": {"a_max": 5.0}}):
        other = JobConfig.from_dict({**job, "probe": {**job["probe"], **change}})
        assert job_prior_key(other) != base, change
    assert job_prior_key(JobConfig.from_dict({**job, "method": "flatquant"})) is None
    # the teacher's dtype is part of what the prior (and the FP baselines) depend on; "auto" keeps the old key
    assert job_prior_key(JobConfig.from_dict({**job, "resources": {"dtype": "auto"}})) == base
    f32 = job_prior_key(JobConfig.from_dict({**job, "resources": {"dtype": "float32"}}))
    bf16 = job_prior_key(JobConfig.from_dict({**job, "resources": {"dtype": "bf16"}}))
    assert len({base, f32, bf16}) == 3
    assert job_prior_key(JobConfig.from_dict({**job, "resources": {"dtype": "bfloat16"}})) == bf16


def test_equal_keys_share_one_prior_across_concurrent_schedulers(tmp_path, sqlite_url):
    builds: list[str] = []
    lock = threading.Lock()

    def probe(ctx):
        probe = ctx.config.run.probe
        key = hashlib.sha256(f"{ctx.config.model}:{probe.to_dict()}".encode()).hexdigest()

        def build(local):
            with lock:
                builds.append(key)
            g = torch.Generator().manual_seed(probe.seed)
            vectors = torch.rand(probe.n_samples, probe.window, generator=g)  # (N, L)
            vectors = vectors / vectors.mean(dim=1, keepdim=True)  # per-sample mean 1
            save_file({"per_sample": vectors, "prior": vectors.mean(0)}, str(local / "prior.safetensors"))
            threading.Event().wait(0.4)  # long enough for the twin job to find it 'busy'
            return {"samples": probe.n_samples}

        got = obtain_prior(ctx, key, build, poll_s=0.05)
        prior = load_file(str(got.local_dir / "prior.safetensors"))["prior"]
        return StageResult(output={"key": key, "uri": got.uri, "cached": got.cached, "sum": float(prior.sum())})

    reg = StageRegistry(specs={"probe": StageSpec("probe", probe)}, planner=lambda c: ["probe"])
    store = JobStore(sqlite_url)
    jobs = []
    for model in ("zoo:a", "zoo:b"):
        for _ in range(2):  # twins: same model, same probe settings
            cfg = JobConfig.from_dict({"model": model, "storage": f"file://{tmp_path / 'art'}",
                                       "probe": {"n_samples": 6, "window": 16, "steps": 16, "seed": 3}})
            jobs.append(store.create_job(cfg))
    scheds = [Scheduler(store, registry=reg, options=SchedulerOptions(preflight=False, poll_s=0.05))
              for _ in range(2)]
    threads = [threading.Thread(target=s.run, kwargs={"once": True}) for s in scheds]
    [t.start() for t in threads]
    [t.join(60) for t in threads]
    assert store.counts() == {"succeeded": 4}
    outs = [store.stages(j)[0].output for j in jobs]
    assert Counter(builds) == {outs[0]["key"]: 1, outs[2]["key"]: 1}  # one build per distinct key
    assert outs[0]["key"] == outs[1]["key"] != outs[2]["key"] == outs[3]["key"]
    assert sorted(o["cached"] for o in outs) == [False, False, True, True]
    assert outs[0]["uri"] == outs[1]["uri"] and outs[0]["sum"] == outs[1]["sum"]
    row = store.prior(outs[0]["key"])
    assert row.state == "ready" and row.metadata == {"samples": 6} and row.uri.endswith(f"priors/{outs[0]['key']}")
