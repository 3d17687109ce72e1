"""The CLI end to end on real components: `faircalib quickstart` on the embedded default (SQLite + local
Ray + a local SeaweedFS it starts and stops), its results equal to the library computed directly,
fetched and verified; and bad input of every kind -> one clear line and a failed job row, nothing lost.
(FAIR-Calib jobs with lm-eval tasks on a SigV4 S3 server: test_pipeline.py.)"""
from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner
from faircalib.orchestrator.cli import main
from faircalib.orchestrator.seaweed import free_port_pair
from faircalib.orchestrator.store import JobStore


def _invoke(*args, ok: bool = True):
    res = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    if ok:
        assert res.exit_code == 0, res.output
    return res


def _write(tmp_path, data, name="job.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return p


def _small_quickstart(monkeypatch):
    """The built-in quickstart job at test size: RTN (calibrate -> evaluate -> upload), tiny evaluations."""
    from faircalib.orchestrator import quickstart

    real = quickstart.quickstart_spec

    def small(model):
        spec = real(model)
        spec.update(method="rtn", calibration={"data": "builtin:kjv:train", "n": 2, "seq_len": 16, "epochs": 0})
        spec["evaluation"].update(tasks=["fidelity", "faircalib_tasks_mc"], n=2, seq_len=24, limit=2, mc_num=2)
        spec["resources"].update(gpus_per_worker=0, calibration_gpus=0)
        return spec

    monkeypatch.setattr(quickstart, "quickstart_spec", small)


def test_quickstart_on_the_embedded_default(ray_session, tiny_model_dir, tmp_path, sqlite_url, monkeypatch):
    """`faircalib quickstart` with no S3 configuration: it starts the local SeaweedFS (anonymous, loopback),
    runs only its own job (an older queued job is left alone) through SQLite + local Ray, prints the
    FP vs W4A4 table whose numbers equal the library's, stops the server it started, and says how to
    fetch; after `storage up` (same data) `fetch` verifies every object, and `storage down` stops it."""
    from faircalib.orchestrator.seaweed import local_state

    from faircalib.data import sample_token_sequences
    from faircalib.eval import compare_to_reference
    from faircalib.models import load_dllm

    _small_quickstart(monkeypatch)
    other = _invoke("submit", _write(tmp_path, {"model": str(tiny_model_dir), "method": "fp",
                                                "storage": f"file://{tmp_path}/a"}), "--db", sqlite_url).output.strip()
    shown = _invoke("quickstart", "--model", tiny_model_dir, "--show-job").output
    assert yaml.safe_load(shown)["method"] == "rtn" and yaml.safe_load(shown)["model"] == str(tiny_model_dir)
    assert local_state() is None
    out = _invoke("quickstart", "--model", tiny_model_dir, "--db", sqlite_url).output
    assert "(started now); artifacts under s3://faircalib/jobs" in out
    store = JobStore(sqlite_url)
    [row] = [r for r in store.list_jobs() if r.id != other]
    assert row.state.value == "succeeded" and store.get_job(other).state.value == "queued"
    assert f"job {row.id}: succeeded" in out and "rtn W4A4 vs FP" in out and "faircalib_tasks_mc" in out
    assert f"artifacts  s3://faircalib/jobs/{row.id}/" in out
    assert f"faircalib storage up && faircalib fetch {row.id} ./{row.id}" in out
    assert local_state() is None  # the server it started is stopped again

    fid = row.results["metrics"]["fidelity"]
    m = load_dllm(tiny_model_dir)
    ids = sample_token_sequences(m.tokenizer, "builtin:kjv:heldout", 2, 24, seed=0)
    direct = compare_to_reference(m.model, ids, seed=0)
    assert fid["fp"]["nll"] == pytest.approx(direct.nll, rel=1e-5)
    assert f"{fid['fp']['nll']:.4f}" in out and f"{fid['quantized']['kl_to_ref']:.4f}" in out
    mc = row.results["metrics"]["faircalib_tasks_mc"]
    assert mc["fp"]["n_samples"] == 2 and 0 <= mc["quantized"]["acc"] <= 1 and mc["quantized"]["wall_s"] > 0

    up = _invoke("storage", "up", "--port", free_port_pair()).output
    try:
        assert "anonymous" in up
        pid = json.loads(_invoke("storage", "status", "--json").output)["local_server"]["pid"]
        assert f"(pid {pid}," in _invoke("storage", "up").output  # idempotent: the same server
        assert "all sha256 verified" in _invoke("fetch", row.id, tmp_path / "dest", "--db", sqlite_url).output
        fetched = json.loads((tmp_path / "dest/evaluate/results.json").read_text())
        assert fetched["metrics"] == row.results["metrics"]
        assert "| fidelity | nll |" in (tmp_path / "dest/evaluate/report.md").read_text()
        assert json.loads((tmp_path / "dest/job.json").read_text())["config"]["labels"] == {"example": "quickstart"}
        logs = _invoke("logs", row.id, "--db", sqlite_url).output
        assert "preflight" in logs and "evaluate: 2/2 shards done" in logs and "running -> succeeded" in logs
    finally:
        assert _invoke("storage", "down").output.strip() == "stopped"
    assert _invoke("storage", "down").output.strip() == "not running"


@pytest.mark.parametrize("case", ["yaml", "field", "zoo", "unknown-task", "missing-file"])
def test_bad_job_input_is_one_line_and_a_failed_row(case, tmp_path, sqlite_url, job_dict, tiny_model_dir):
    good = job_dict(tiny_model_dir, f"file://{tmp_path / 'art'}")
    content, expect = {
        "yaml": ("model: x\nprobe: {n: 3\n", "invalid YAML at line"),
        "field": ({**good, "bits": "w2a2"}, "bits: 'w2a2' is not allowed; allowed: w4a4, w3a4, w8a8"),
        "zoo": ({**good, "model": "zoo:nope"}, "unknown zoo model 'zoo:nope'"),
        "unknown-task": ({**good, "evaluation": {"tasks": ["fidelity", "faircalib_sum"]}},
                         "evaluation.tasks[1]: 'faircalib_sum' is not a known task; offered: fidelity, faircalib_suite"),
        "missing-file": (None, "cannot read it"),
    }[case]
    path = tmp_path / "nope.yaml" if content is None else _write(tmp_path, content)
    res = _invoke("submit", path, "--db", sqlite_url, ok=False)
    assert res.exit_code == 1
    err = res.output.strip()
    assert err.startswith("Error: ") and expect in err and "\n" not in err and "recorded as failed job" in err
    [row] = JobStore(sqlite_url).list_jobs()
    assert row.state.value == "failed" and expect in row.reason
    if case != "missing-file":
        assert row.config_text == path.read_text()  # the input is kept: nothing lost


@pytest.mark.parametrize("case", ["model-dir", "credentials", "unwritable"])
def test_bad_runtime_input_fails_the_job_with_a_reason(case, tmp_path, sqlite_url, job_dict, tiny_model_dir,
                                                       monkeypatch, request):
    storage = f"file://{tmp_path / 'art'}"
    model = tiny_model_dir
    if case == "model-dir":
        model, expect = tmp_path / "no-model", "model directory"
    elif case == "credentials":
        bucket = request.getfixturevalue("s3_env")
        storage, expect = f"s3://{bucket}/jobs", "access denied (SignatureDoesNotMatch)"
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-999")
    else:
        (tmp_path / "file").write_text("x")
        storage, expect = f"file://{tmp_path / 'file'}/jobs", "is not writable"
    job = _invoke("submit", _write(tmp_path, job_dict(model, storage)), "--db", sqlite_url).output.strip()
    out = _invoke("run", "--once", "--db", sqlite_url).output
    assert f"{job} failed: " in out
    row = JobStore(sqlite_url).get_job(job)
    assert row.state.value == "failed" and expect in row.reason and "\n" not in row.reason
    assert "wrong-secret-999" not in json.dumps([e.message for e in JobStore(sqlite_url).events(job)])
    assert "wrong-secret-999" not in row.reason
    # retry is possible once the cause is fixed (here it is not: it fails the same way)
    assert "queued" in _invoke("retry", job, "--db", sqlite_url).output


def test_cancel_retry_status_cli(tmp_path, sqlite_url, job_dict, tiny_model_dir):
    job = _invoke("submit", _write(tmp_path, job_dict(tiny_model_dir, f"file://{tmp_path}/a")),
                  "--db", sqlite_url).output.strip()
    assert _invoke("cancel", job[:8], "--db", sqlite_url).output.strip() == f"{job} cancelled"
    res = _invoke("cancel", job, "--db", sqlite_url, ok=False)
    assert res.exit_code == 1 and "already cancelled" in res.output
    assert _invoke("retry", job, "--db", sqlite_url).output.strip() == f"{job} queued"
    listing = json.loads(_invoke("status", "--json", "--db", sqlite_url).output)
    assert [(j["id"], j["state"]) for j in listing] == [(job, "queued")]
    res = _invoke("fetch", job, tmp_path / "d", "--db", sqlite_url, ok=False)
    assert "has not uploaded its artifacts yet" in res.output


def test_sweep_cli(tmp_path, sqlite_url, tiny_model_dir):
    sweep = _write(tmp_path, {"name": "grid", "base": {"storage": f"file://{tmp_path}/a", "method": "fp",
                                                       "evaluation": {"n": 2, "seq_len": 16}},
                              "grid": {"model": [str(tiny_model_dir), str(tiny_model_dir) + "/"],
                                       "bits": ["w4a4", "w8a8"]}}, "sweep.yaml")
    out = _invoke("sweep", sweep, "--dry-run").output
    assert out.strip().endswith("4 jobs, 0 distinct priors")
    out = _invoke("sweep", sweep, "--db", sqlite_url).output
    assert "4 jobs queued" in out
    rows = JobStore(sqlite_url).list_jobs()
    assert len(rows) == 4 and len({r.sweep_id for r in rows}) == 1 and all(r.labels == {"sweep": "grid"} for r in rows)
    bad = _write(tmp_path, {"base": {"storage": "file:///x"}, "grid": {"method": ["fp", "faircalib"]},
                            "name": "b"}, "bad.yaml")
    res = _invoke("sweep", bad, "--db", sqlite_url, ok=False)
    assert "model: required field is missing" in res.output and "recorded as failed job" in res.output
