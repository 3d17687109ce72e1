"""Full jobs on the real library: FAIR-Calib (probe -> calibrate -> evaluate -> upload) and RTN on a
tiny LLaDA with the shared Ray, SQLite and a SigV4 SeaweedFS bucket. The service's prior equals the
library's single-pass Stage I prior bit for bit (sharded over 2 probe actors); a second job with the
same probe settings reuses the cached prior; the fetched checkpoint is verified and `load_quantized`
runs it, reproducing the job's reported fidelity numbers."""
from __future__ import annotations

import json

import pytest
import torch
import yaml
from click.testing import CliRunner

from faircalib.orchestrator.cli import main
from faircalib.orchestrator.store import JobStore

PROBE = {"n": 32, "steps": 8, "window": 8, "seed": 1}


def _run(*args):
    res = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output


def _job(tmp_path, model, bucket, **over):
    d = {"model": str(model), "method": "faircalib", "bits": "w4a4", "storage": f"s3://{bucket}/jobs",
         "probe": PROBE, "calibration": {"data": "builtin:kjv:train", "n": 4, "seq_len": 32, "epochs": 1},
         "evaluation": {"n": 2, "seq_len": 24},
         "resources": {"probe_workers": 2, "probe_shard_size": 16, "gpus_per_worker": 0, "calibration_gpus": 0}}
    d.update(over)
    p = tmp_path / f"{d['method']}-{d['bits']}.yaml"
    p.write_text(yaml.safe_dump(d))
    return p


def test_faircalib_job_end_to_end(ray_session, s3_env, tiny_model_dir, tmp_path, sqlite_url):
    from faircalib.checkpoint import load_quantized
    from faircalib.data import sample_token_sequences
    from faircalib.eval import compare_to_reference
    from faircalib.models import load_dllm
    from faircalib.probe import PositionPrior, PriorSettings, ProbeConfig, probe_prior

    job = _run("submit", _job(tmp_path, tiny_model_dir, s3_env), "--run", "--db", sqlite_url).splitlines()[0]
    store = JobStore(sqlite_url)
    row = store.get_job(job)
    assert row.state.value == "succeeded", row.reason
    stages = {s.name: s.output for s in store.stages(job)}
    assert list(stages) == ["probe", "calibrate", "evaluate", "upload"]
    assert stages["probe"]["cached"] is False and stages["probe"]["shards"] == 2
    assert row.prior_key == stages["probe"]["prior_key"]

    # Stage I through the service == the library's single pass, exactly
    _run("fetch", job, tmp_path / "out", "--db", sqlite_url)
    from faircalib.orchestrator.storage import fetch_tree, open_storage

    fetch_tree(open_storage(stages["probe"]["uri"]), tmp_path / "prior")
    service_prior = PositionPrior.load(tmp_path / "prior")
    m = load_dllm(tiny_model_dir)
    ref = probe_prior(m.model, m.tokenizer, None, ProbeConfig(
        n_samples=32, steps=8, window=8, seed=1, batch_size=16, prior=PriorSettings(reliability="probability")))
    assert torch.equal(service_prior.per_sample, ref.per_sample)
    assert torch.equal(service_prior.sample_ids, torch.arange(32))

    # the fetched checkpoint is verified, loads, and reproduces the job's fidelity numbers
    ckpt = tmp_path / "out/calibrate/checkpoint"
    q = load_quantized(ckpt)
    ids = sample_token_sequences(m.tokenizer, "builtin:kjv:heldout", 2, 24, seed=0)
    direct = compare_to_reference(q.model, ids, ref=m.model, seed=0)
    fid = row.results["metrics"]["fidelity"]
    assert fid["quantized"]["kl_to_ref"] == pytest.approx(direct.kl_to_ref, rel=1e-4)
    assert fid["quantized"]["nll"] == pytest.approx(direct.nll, rel=1e-5)
    assert fid["quantized"]["kl_to_ref"] > 0 and 0 < fid["quantized"]["top1_agree"] <= 1
    record = json.loads((ckpt / "quant_config.json").read_text())
    assert (record["method"], record["w_bits"], record["a_bits"]) == ("faircalib", 4, 4)
    assert record["prior_hash"] is not None
    names = {a["name"] for a in store.artifacts(job)}
    assert {"calibrate/checkpoint/quant_config.json", "calibrate/checkpoint/manifest.json",
            "calibrate/state/block_0001.json", "evaluate/results.json", "_manifest.json"} <= names

    # same model + probe settings, other bits: the prior comes from the cache (no probe actors)
    job2 = _run("submit", _job(tmp_path, tiny_model_dir, s3_env, bits="w8a8"), "--run",
                "--db", sqlite_url).splitlines()[0]
    row2 = store.get_job(job2)
    assert row2.state.value == "succeeded", row2.reason
    p2 = store.stages(job2)[0].output
    assert p2["cached"] is True and p2["prior_key"] == row.prior_key and p2["uri"] == stages["probe"]["uri"]
    assert not any(e.kind == "pool" and e.stage == "probe" for e in store.events(job2))
    kl8 = row2.results["metrics"]["fidelity"]["quantized"]["kl_to_ref"]
    assert kl8 < fid["quantized"]["kl_to_ref"]  # W8A8 is closer to FP than W4A4


def test_rtn_job_needs_no_probe_or_data(ray_session, tiny_model_dir, tmp_path, sqlite_url):
    p = tmp_path / "rtn.yaml"
    p.write_text(yaml.safe_dump({"model": str(tiny_model_dir), "method": "rtn", "bits": "w4a4",
                                 "storage": f"file://{tmp_path / 'art'}", "evaluation": {"n": 2, "seq_len": 24},
                                 "resources": {"gpus_per_worker": 0, "calibration_gpus": 0}}))
    job = _run("submit", p, "--run", "--db", sqlite_url).splitlines()[0]
    store = JobStore(sqlite_url)
    row = store.get_job(job)
    assert row.state.value == "succeeded", row.reason
    assert [s.name for s in store.stages(job)] == ["calibrate", "evaluate", "upload"]
    q = row.results["metrics"]["fidelity"]["quantized"]
    assert q["kl_to_ref"] > 0
