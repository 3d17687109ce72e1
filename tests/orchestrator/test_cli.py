"""The CLI on real components: bad input of every kind -> one clear line and a failed job row, nothing
lost (`submit`, `submit --run`, `run --once`); cancel / retry / status; sweeps. (Whole jobs, among them
`faircalib quickstart` on the embedded default: test_pipeline.py.)"""
from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner
from faircalib.orchestrator.cli import main
from faircalib.orchestrator.config import JobConfig
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


@pytest.mark.parametrize("case", ["yaml", "field", "zoo", "unknown-task"])
def test_bad_job_input_is_one_line_and_a_failed_row(case, tmp_path, sqlite_url, job_dict, tiny_model_dir):
    good = job_dict(tiny_model_dir, f"file://{tmp_path / 'art'}")
    content, expect = {
        "yaml": ("model: x\nprobe: {n: 3\n", "invalid YAML at line"),
        "field": ({**good, "bits": "w2a2"}, "bits: 'w2a2' is not allowed; allowed: w4a4, w3a4, w8a8"),
        "zoo": ({**good, "model": "zoo:nope"}, "unknown zoo model 'zoo:nope'"),
        "unknown-task": ({**good, "evaluation": {"tasks": ["fidelity", "faircalib_sum"]}},
                         "evaluation.tasks[1]: 'faircalib_sum' is not a known task; offered: fidelity, faircalib_suite"),
    }[case]
    path = _write(tmp_path, content)
    res = _invoke("submit", path, "--db", sqlite_url, ok=False)
    assert res.exit_code == 1
    err = res.output.strip()
    assert err.startswith("Error: ") and expect in err and "\n" not in err and "recorded as failed job" in err
    [row] = JobStore(sqlite_url).list_jobs()
    assert row.state.value == "failed" and expect in row.reason
    assert row.config_text == path.read_text()  # the input is kept: nothing lost


@pytest.mark.parametrize("case", ["missing", "directory", "unreadable", "not-utf8"])
def test_submit_of_an_unreadable_file_fails_without_a_job_row(case, tmp_path, sqlite_url):
    """Nothing was submitted, so nothing is recorded: one line naming the file, exit code 1, no row."""
    import os

    path = tmp_path / "job.yaml"
    if case == "directory":
        path.mkdir()
    elif case == "unreadable":
        path.write_text("model: zoo:tiny-llada\n")
        path.chmod(0)
        if os.access(path, os.R_OK):  # root reads anything: use a file that vanishes as it is opened
            path.chmod(0o644)
            path = tmp_path / "dangling.yaml"
            path.symlink_to(tmp_path / "gone.yaml")
    elif case == "not-utf8":
        path.write_bytes(b"model: \xff\xfe\n")
    res = _invoke("submit", path, "--db", sqlite_url, ok=False)
    err = res.output.strip()
    if case == "directory":  # Click's own argument check (a usage error, exit code 2)
        assert res.exit_code == 2 and "is a directory" in err
    else:
        assert res.exit_code == 1 and err.startswith("Error: ") and "\n" not in err
        assert f"job file {str(path)!r}: cannot read it" in err and "no job was recorded" in err
    assert JobStore(sqlite_url).list_jobs() == []


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
    if case == "credentials":
        job = _invoke("submit", _write(tmp_path, job_dict(model, storage)), "--db", sqlite_url).output.strip()
        res = _invoke("run", "--once", "--db", sqlite_url, ok=False)
        assert res.exit_code == 1  # the exit code reflects the failed job it ran
        assert f"{job} failed: " in res.output and "1 of 1 job(s) did not succeed" in res.output
    else:  # submit --run: queue, run a scheduler here, follow the job; exit 1 when it fails
        res = _invoke("submit", _write(tmp_path, job_dict(model, storage)), "--run", "--db", sqlite_url, ok=False)
        job = res.output.splitlines()[0].strip()
        assert res.exit_code == 1 and f"job {job}: failed" in res.output and expect in res.output
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
    store = JobStore(sqlite_url)
    rows = store.list_jobs()
    assert len(rows) == 4 and len({r.sweep_id for r in rows}) == 1 and all(r.labels == {"sweep": "grid"} for r in rows)
    sweep_id = rows[0].sweep_id
    assert f"sweep id: {sweep_id}" in out
    assert len({r.name for r in rows}) == 4  # grid values in the names: the two spellings get -2
    # status --sweep: this sweep's jobs only
    other = store.create_job(JobConfig.from_dict({"model": str(tiny_model_dir), "method": "fp",
                                                  "storage": f"file://{tmp_path}/a"}))
    listed = json.loads(_invoke("status", "--sweep", sweep_id[:6], "--json", "--db", sqlite_url).output)
    assert {r["id"] for r in listed} == {r.id for r in rows} and other not in {r["id"] for r in listed}
    # results --sweep: one row per job, each metric's value and its delta vs FP
    for i, r in enumerate(rows):
        store.claim("s", [r.id])
        store.set_results(r.id, {"metrics": {"fidelity": {"fp": {"nll": 2.0}, "quantized": {"nll": 2.0 + i}}}},
                          attempt=1)
    cmp = json.loads(_invoke("results", "--sweep", sweep_id, "--json", "--db", sqlite_url).output)
    assert cmp["sweep"] == sweep_id and cmp["metrics"] == ["fidelity/nll"] and len(cmp["rows"]) == 4
    # fp jobs (this grid's method) report the FP value and no delta
    assert all(r["values"]["fidelity/nll"]["value"] == 2.0 and r["values"]["fidelity/nll"]["delta"] is None
               for r in cmp["rows"])
    table = _invoke("results", "--sweep", sweep_id, "--db", sqlite_url).output
    assert "fidelity/nll" in table and "2.0000" in table
    bad = _write(tmp_path, {"base": {"storage": "file:///x"}, "grid": {"method": ["fp", "faircalib"]},
                            "name": "b"}, "bad.yaml")
    res = _invoke("sweep", bad, "--db", sqlite_url, ok=False)
    assert "model: required field is missing" in res.output and "recorded as failed job" in res.output


def test_submit_notes_a_probe_scale_that_differs_from_the_models_decoding(tmp_path, sqlite_url):
    """The job file keeps the library's defaults (T = L = 256); submit says so when the model decodes at
    other settings, and stays silent once the job file sets them."""
    job = {"model": "zoo:tiny-llada", "method": "faircalib", "storage": f"file://{tmp_path / 'art'}"}
    res = CliRunner().invoke(main, ["submit", str(_write(tmp_path, job)), "--db", sqlite_url], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert ("note: Stage I probes at T=256 L=256 (the library's default, the paper's scale); the model decodes at "
            "T=16 L=16 (model card of zoo:tiny-llada)") in res.stderr
    job["probe"] = {"steps": 16, "window": 16}
    res = CliRunner().invoke(main, ["submit", str(_write(tmp_path, job, "j2.yaml")), "--db", sqlite_url])
    assert res.exit_code == 0 and "note:" not in res.stderr
    assert JobStore(sqlite_url).list_jobs()[0].config.run.probe.steps == 16


# ---------------------------------------------------------------- hardening (issue 16)
def test_status_shows_job_text_as_text_not_markup(tmp_path, sqlite_url):
    """A rejected job whose reason reads like rich markup (`s3://BUCKET[/PREFIX]`) and a name with
    brackets: `status` and `status JOB` print them literally instead of failing with MarkupError."""
    bad = _write(tmp_path, "model: zoo:tiny-llada\nmethod: fp\nstorage: http://x\nname: a[bold]b[/bold]\n")
    res = _invoke("submit", bad, "--db", sqlite_url, ok=False)
    assert "s3://BUCKET[/PREFIX]" in res.output
    [row] = JobStore(sqlite_url).list_jobs()
    store = JobStore(sqlite_url)
    job = store.record_rejected("closing tag [/x] and [red]not red[/red]", config_text=None, name="n[/i]",
                                model="m[link=x]", method="[b]")
    listing = _invoke("status", "--db", sqlite_url, "--limit", "5").output  # raised MarkupError before
    assert "[/x]" in listing and "n[/i]" in listing and "a[bold]b[/bold]" in listing
    one = _invoke("status", job, "--db", sqlite_url).output
    assert "n[/i]" in one and "[b]/?" in one and "m[link=x]" in one and "reason: closing tag [/x] and [red]not red[/red]" in one
    assert "storage: 'http://x' has an unsupported scheme" in _invoke("status", row.id, "--db", sqlite_url).output


def test_retry_of_a_running_job_is_refused_by_the_cli(tmp_path, sqlite_url, job_dict, tiny_model_dir):
    job = _invoke("submit", _write(tmp_path, job_dict(tiny_model_dir, f"file://{tmp_path}/a")),
                  "--db", sqlite_url).output.strip()
    store = JobStore(sqlite_url)
    store.claim("elsewhere")
    res = _invoke("retry", job, "--db", sqlite_url, ok=False)
    assert res.exit_code == 1 and res.output.count("\n") == 1
    assert f"job {job} cannot be retried: it is running (attempt 1); cancel it first" in res.output
    assert store.get_job(job).state.value == "running" and store.get_job(job).attempt == 1


def test_non_utf8_sweep_file_is_a_one_line_error(tmp_path, sqlite_url):
    """(A non-UTF-8 job file: test_submit_of_an_unreadable_file_fails_without_a_job_row.) A sweep file that
    is not UTF-8 is refused in one line and recorded as a rejected sweep, like any other bad sweep file."""
    p = tmp_path / "sweep.yaml"
    p.write_bytes("model: zoo:tiny-llada\nname: caf\xe9\n".encode("latin-1"))
    res = _invoke("sweep", p, "--db", sqlite_url, ok=False)
    assert res.exit_code == 1 and res.output.count("\n") == 1 and "Traceback" not in res.output
    assert f"sweep file '{p}' is not UTF-8 text (byte 0xe9 at offset 31); save it as UTF-8 YAML" in res.output
    [row] = JobStore(sqlite_url).list_jobs()
    assert row.state.value == "failed" and "is not UTF-8 text" in row.reason
    res = _invoke("sweep", p, "--dry-run", ok=False)
    assert res.exit_code == 1 and res.output.count("\n") == 1 and "is not UTF-8 text" in res.output


def test_storage_up_with_a_port_out_of_range_is_one_line():
    for port in ("99999", "60000", "0"):
        res = _invoke("storage", "up", "--port", port, ok=False)
        assert res.exit_code == 1 and res.output.count("\n") == 1, res.output
        assert f"S3 port {port} is out of range" in res.output and "choose a port in 1-55535" in res.output


@pytest.mark.parametrize("url", ["foo", "postgresql://u:Pa:ss@w0rd@host:nope/db", "postgresql+nodriver://u:pw@h/d"])
def test_malformed_db_urls_are_one_line_errors_without_the_password(url):
    res = _invoke("status", "--db", url, ok=False)
    assert res.exit_code == 1 and res.output.count("\n") == 1 and res.output.startswith("Error: ")
    assert "Traceback" not in res.output and "w0rd" not in res.output and ":pw@" not in res.output
