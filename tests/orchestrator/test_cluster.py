"""A real multi-node Ray cluster on this machine (orchestrator.testing.LocalRayCluster: `ray start
--head` and `ray start --address` as separate processes on 127.0.0.1, each with its own temp dir, CPUs
and a custom resource): a 2-job sweep through `faircalib run --ray-address`. The FAIR-Calib job's
probe shards ran on both nodes (node ids in its events), and the merged prior equals a single pass
of the library in this process, bit for bit; every server of the cluster listens on loopback only, and
stopping it leaves no process behind. Marked slow; CI runs it (the README's test command)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from faircalib.orchestrator.store import JobStore
from faircalib.orchestrator.testing import LocalRayCluster, is_loopback, listening_sockets


@pytest.mark.slow
def test_sweep_on_a_two_node_cluster_probes_on_both_nodes_and_merges_exactly(tiny_model_dir, tmp_path, sqlite_url):
    probe = {"n_samples": 8, "batch_size": 2, "steps": 4, "window": 4, "seed": 0}
    sweep = {"name": "nodes", "base": {
        "model": str(tiny_model_dir), "storage": f"file://{tmp_path / 'artifacts'}", "probe": probe,
        "calibration": {"n": 2, "seq_len": 16, "epochs": 1, "batch_size": 2},
        "evaluation": {"tasks": ["fidelity"], "n": 2, "seq_len": 16},
        "resources": {"probe_workers": 3, "probe_shard_size": 2, "gpus_per_worker": 0, "calibration_gpus": 0,
                      "eval_workers": 1, "cpus_per_worker": 1}},
        "grid": {"method": ["faircalib", "rtn"], "bits": ["w4a4"]}}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    exe = Path(sys.executable).parent / "faircalib"
    cli = [str(exe) if exe.exists() else "faircalib"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([*cli, "sweep", str(path), "--db", sqlite_url], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    # 2 CPUs per node: whatever the other job holds, the probe's 3 actors cannot all fit on one node
    with LocalRayCluster(nodes=2, cpus_per_node=2, env=env) as cluster:
        nodes = cluster.node_ids()
        assert sorted(nodes.values()) == ["node_0", "node_1"]
        run = subprocess.run([*cli, "run", "--once", "--max-jobs", "2", "--ray-address", cluster.address,
                              "--db", sqlite_url], env=env, capture_output=True, text=True, timeout=900)
        # every server of both nodes (GCS, raylets, agents, workers) listens on loopback only
        socks = listening_sockets(cluster.processes())
        assert sum(1 for s in socks.values() if s) >= 4, socks  # at least the GCS and two raylets and an agent
        public = {p: [a for a in s if not is_loopback(a[0])] for p, s in socks.items()}
        assert not any(public.values()), public
    assert run.returncode == 0, run.stderr[-3000:]
    assert cluster.processes() == []  # stop() left no process of either node behind
    store = JobStore(sqlite_url)
    jobs = {j.method: j for j in store.list_jobs()}
    assert {m: j.state.value for m, j in jobs.items()} == {"faircalib": "succeeded", "rtn": "succeeded"}, run.stdout
    fc = jobs["faircalib"]
    done = [e.data for e in store.events(fc.id) if e.kind == "shard_done" and e.stage == "probe"]
    assert sorted(d["shard"] for d in done) == [0, 1, 2, 3]
    assert {d["node_id"] for d in done} == set(nodes)  # probe shards ran on both nodes
    probe_out = next(s.output for s in store.stages(fc.id) if s.name == "probe")
    assert sorted(nodes[n] for n in probe_out["shards_by_node"]) == ["node_0", "node_1"]
    # the merged prior equals one single-node pass of the library
    from faircalib.models import load_dllm, weights_hash
    from faircalib.probe import PositionPrior, ProbeConfig, probe_shard
    from faircalib.service.storage import fetch_tree, open_storage

    fetch_tree(open_storage(probe_out["uri"]), tmp_path / "prior")
    merged = PositionPrior.load(tmp_path / "prior")
    m = load_dllm(tiny_model_dir)
    torch.set_num_threads(1)
    single = probe_shard(m.model, m.tokenizer, ProbeConfig.from_dict(probe), 0, probe["n_samples"],
                         model_hash=weights_hash(tiny_model_dir))
    assert torch.equal(merged.per_sample, single.per_sample) and torch.equal(merged.sample_ids, single.sample_ids)
    assert merged.cache_key() == single.cache_key() == fc.prior_key
    print(json.dumps({"nodes": nodes, "shards_by_node": probe_out["shards_by_node"], "prior_equal": True}))


def test_cluster_start_retries_a_raylet_registration_timeout_and_nothing_else(monkeypatch):
    """`ray start` gives a raylet a fixed 30 s to register; on a loaded machine that runs out. A start
    that timed out is retried from scratch (new temp root and port); any other failure is raised at once."""
    answers = ["ray start (node 0) failed: ... The current node timed out during startup. ...", None]
    calls, stopped = [], []
    c = LocalRayCluster(nodes=2)
    monkeypatch.setattr(c, "_start_once", lambda timeout_s: calls.append((c.root, c.port)) or answers.pop(0))
    monkeypatch.setattr(c, "stop", lambda: stopped.append(c.root))
    assert c.start() is c
    assert len(calls) == 2 and len(stopped) == 1 and calls[0][0] != calls[1][0]
    assert c.address == f"127.0.0.1:{calls[1][1]}"

    c2 = LocalRayCluster(nodes=1)
    monkeypatch.setattr(c2, "_start_once", lambda timeout_s: "ray start (node 0) failed: port in use")
    monkeypatch.setattr(c2, "stop", lambda: None)
    with pytest.raises(RuntimeError, match="port in use"):
        c2.start()
    c3 = LocalRayCluster(nodes=1)
    monkeypatch.setattr(c3, "_start_once", lambda timeout_s: "node 0: timed out during startup")
    monkeypatch.setattr(c3, "stop", lambda: None)
    with pytest.raises(RuntimeError, match="timed out"):
        c3.start(attempts=2)
