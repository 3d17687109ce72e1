"""Finite-output checks at the job's stage boundaries, with the real stages on the shared Ray: a NaN
weight fails the job at loading (naming the tensor and file, no checkpoint uploaded); a model with
finite weights but overflowing activations fails in probe (no prior cached) and in evaluate (naming the
NaN metric); a truncated model.safetensors fails the job naming the file."""
from __future__ import annotations

import math
import shutil

from faircalib.orchestrator.config import JobConfig
from faircalib.orchestrator.scheduler import Scheduler, SchedulerOptions
from faircalib.orchestrator.store import JobStore
from safetensors.torch import load_file, save_file


def _damaged(tiny_model_dir, tmp_path, how: str):
    path = tmp_path / f"model-{how}"
    shutil.copytree(tiny_model_dir, path)
    f = path / "model.safetensors"
    if how == "truncated":
        f.write_bytes(f.read_bytes()[:-100])
        return path
    sd = load_file(f)
    if how == "nan":
        sd["model.transformer.blocks.0.q_proj.weight"][1, 2] = math.nan
    else:  # finite weights, activations overflow float32 -> NaN logits
        for k in ("model.transformer.blocks.0.up_proj.weight", "model.transformer.blocks.0.ff_out.weight"):
            sd[k] = sd[k] * 1e30
    save_file(sd, str(f), metadata={"format": "pt"})
    return path


def _run(store, job_dict, model, tmp_path, **over):
    cfg = JobConfig.from_dict(job_dict(model, f"file://{tmp_path / 'art'}", **over))
    job = store.create_job(cfg)
    Scheduler(store, options=SchedulerOptions(poll_s=0.05)).run(once=True)
    return store.get_job(job)


SMALL_PROBE = {"n_samples": 16, "steps": 4, "window": 4}
RES = {"eval_workers": 1, "probe_workers": 1, "gpus_per_worker": 0, "calibration_gpus": 0}


def test_nan_weight_fails_an_rtn_job_at_loading(ray_session, tiny_model_dir, tmp_path, sqlite_url, job_dict):
    store = JobStore(sqlite_url)
    model = _damaged(tiny_model_dir, tmp_path, "nan")
    row = _run(store, job_dict, model, tmp_path, method="rtn", resources=RES)
    assert row.state.value == "failed"
    assert row.reason == (f"loading {model / 'model.safetensors'}: tensor model.transformer.blocks.0.q_proj.weight "
                          "has 1 of 4096 values non-finite (nan); the weights are corrupt or diverged; re-export or "
                          "re-download them")
    assert [(s.name, s.state) for s in store.stages(row.id)] == [("calibrate", "failed"), ("evaluate", "pending"),
                                                                 ("upload", "pending")]
    assert not [a for a in store.artifacts(row.id) if a["name"].startswith("calibrate/checkpoint")]
    assert row.results is None


def test_overflowing_model_fails_in_probe_and_caches_no_prior(ray_session, tiny_model_dir, tmp_path, sqlite_url,
                                                              job_dict):
    store = JobStore(sqlite_url)
    model = _damaged(tiny_model_dir, tmp_path, "overflow")
    row = _run(store, job_dict, model, tmp_path, method="faircalib", probe=SMALL_PROBE, resources=RES,
               calibration={"n": 2, "seq_len": 16, "epochs": 1})
    assert row.state.value == "failed"
    assert row.reason.startswith("probe: the model's logits at diffusion step 0 of probe batch 0 have ")
    assert "non-finite (nan" in row.reason and "no prior is built from it" in row.reason
    assert store.stages(row.id)[0].state == "failed"
    assert row.prior_key and store.prior(row.prior_key).state == "failed"  # nothing "ready" to reuse
    assert not list((tmp_path / "art").rglob("prior*.safetensors"))


def test_overflowing_model_fails_in_evaluate_naming_the_metric(ray_session, tiny_model_dir, tmp_path, sqlite_url,
                                                               job_dict):
    store = JobStore(sqlite_url)
    model = _damaged(tiny_model_dir, tmp_path, "overflow")
    row = _run(store, job_dict, model, tmp_path, resources=RES)  # method fp: evaluate + upload
    assert row.state.value == "failed"
    assert row.reason.startswith("evaluate: the model's results: metric fidelity.fp.nll is nan; its outputs are NaN/inf")
    assert row.results is None
    assert [s.state for s in store.stages(row.id)] == ["failed", "pending"]
    assert not [a for a in store.artifacts(row.id) if a["name"].startswith("evaluate/")]


def test_truncated_weights_fail_the_job_naming_the_file(tiny_model_dir, tmp_path, sqlite_url, job_dict):
    store = JobStore(sqlite_url)
    model = _damaged(tiny_model_dir, tmp_path, "truncated")
    row = _run(store, job_dict, model, tmp_path)
    assert row.state.value == "failed" and "\n" not in row.reason
    assert row.reason.startswith(f"{model / 'model.safetensors'}: not a readable safetensors file (")
    assert "internal error" not in row.reason and "re-download or re-export it" in row.reason

