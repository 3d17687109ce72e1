"""A real multi-node Ray cluster on this machine (orchestrator.testing.LocalRayCluster: `ray start
--head` and `ray start --address` as separate processes on 127.0.0.1, each with its own temp dir, one
CPUs and a custom resource): a 2-job sweep through `faircalib run --ray-address`. The FAIR-Calib job's
probe shards ran on both nodes (node ids in its events), and the merged prior equals a single pass
of the library in this process, bit for bit. Marked slow; CI runs it (the README's test command)."""
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
from faircalib.orchestrator.testing import LocalRayCluster


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
    assert run.returncode == 0, run.stderr[-3000:]
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
