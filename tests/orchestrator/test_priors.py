"""The prior cache: jobs with equal prior keys share one prior, built once even when two schedulers
run such jobs at the same time; the others wait for it and fetch it (checksums verified)."""
from __future__ import annotations

import hashlib
import threading
from collections import Counter

import torch
from faircalib.orchestrator.config import JobConfig, ProbeSettings
from faircalib.orchestrator.priors import obtain_prior, prior_key
from faircalib.orchestrator.scheduler import Scheduler, SchedulerOptions
from faircalib.orchestrator.stages import StageRegistry, StageResult, StageSpec
from faircalib.orchestrator.store import JobStore
from safetensors.torch import load_file, save_file


def test_prior_key_covers_model_and_every_probe_setting():
    base = prior_key("m1", ProbeSettings())
    assert base == prior_key("m1", ProbeSettings())
    assert base != prior_key("m2", ProbeSettings())
    for change in ({"n": 511}, {"steps": 128}, {"window": 64}, {"schedule": "late"}, {"gamma": 3.0},
                   {"beta": 0.0}, {"reliability": "margin"}, {"floor": 0.2}, {"seed": 1},
                   {"prompts": "builtin:tasks:train"}, {"a_max": 5.0}):
        assert prior_key("m1", ProbeSettings(**change)) != base, change


def test_equal_keys_share_one_prior_across_concurrent_schedulers(tmp_path, sqlite_url):
    builds: list[str] = []
    lock = threading.Lock()

    def probe(ctx):
        key = prior_key(hashlib.sha256(ctx.config.model.encode()).hexdigest(), ctx.config.probe)

        def build(local):
            with lock:
                builds.append(key)
            g = torch.Generator().manual_seed(ctx.config.probe.seed)
            vectors = torch.rand(ctx.config.probe.n, ctx.config.probe.window, generator=g)  # (N, L)
            vectors = vectors / vectors.mean(dim=1, keepdim=True)  # per-sample mean 1
            save_file({"per_sample": vectors, "prior": vectors.mean(0)}, str(local / "prior.safetensors"))
            threading.Event().wait(0.4)  # long enough for the twin job to find it 'busy'
            return {"samples": ctx.config.probe.n}

        got = obtain_prior(ctx, key, build, poll_s=0.05)
        prior = load_file(str(got.local_dir / "prior.safetensors"))["prior"]
        return StageResult(output={"key": key, "uri": got.uri, "cached": got.cached, "sum": float(prior.sum())})

    reg = StageRegistry(specs={"probe": StageSpec("probe", probe)}, planner=lambda c: ["probe"])
    store = JobStore(sqlite_url)
    jobs = []
    for model in ("zoo:a", "zoo:b"):
        for _ in range(2):  # twins: same model, same probe settings
            cfg = JobConfig.from_dict({"model": model, "storage": f"file://{tmp_path / 'art'}",
                                       "probe": {"n": 6, "window": 16, "seed": 3}})
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
