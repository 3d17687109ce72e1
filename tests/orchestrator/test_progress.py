"""CLI progress rendering: library events as bars on a terminal / one line each otherwise / nothing with
--quiet; job events from the store folded into one bar per running stage; `faircalib probe` prints the
Stage I settings it chose (from the model card) and its progress."""
from __future__ import annotations

import io
import json

from click.testing import CliRunner
from faircalib.orchestrator.cli import main
from faircalib.orchestrator.config import JobConfig
from faircalib.orchestrator.progress import JobWatcher, ProgressView
from faircalib.orchestrator.store import JobStore
from rich.console import Console

PROBE = [{"event": "probe_start", "n_samples": 64}] + [
    {"event": "probe_batch", "done": d, "total": 64, "batch": d // 16 - 1} for d in (16, 32)]
CALIB = [{"event": "start", "method": "faircalib", "setting": "w4a4", "n_blocks": 2, "n_sequences": 8, "seq_len": 16},
         {"event": "block_start", "block": 0, "n_blocks": 2, "epochs": 3},
         {"event": "epoch", "block": 0, "n_blocks": 2, "epoch": 1, "epochs": 3, "loss": 0.25}]


def _console(tty: bool) -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=tty, width=140, color_system=None), buf


def test_without_a_terminal_each_event_is_one_line():
    con, buf = _console(False)
    with ProgressView(console=con) as view:
        assert not view.live
        view.note("Stage I probe: T=16 steps")
        for e in PROBE + CALIB:
            view(e)
    lines = buf.getvalue().splitlines()
    assert lines[0] == "Stage I probe: T=16 steps" and lines[1] == "Stage I probe: 64 prompts"
    assert lines[2].startswith("Stage I probe: 16/64 prompts [") and "eta" in lines[3]
    assert lines[-1].startswith("block 1/2 epoch 1/3: loss 0.25")
    assert len(lines) == 1 + len(PROBE) + len(CALIB)


def test_quiet_prints_nothing():
    for tty in (False, True):
        con, buf = _console(tty)
        with ProgressView(quiet=True, console=con) as view:
            view.note("hello")
            for e in PROBE + CALIB:
                view(e)
        assert buf.getvalue() == ""


def test_on_a_terminal_events_drive_bars():
    con, buf = _console(True)
    view = ProgressView(console=con)
    assert view.live
    for e in PROBE + CALIB:
        view(e)
    tasks = {t.description: t for t in view._progress.tasks}
    assert (tasks["Stage I probe"].completed, tasks["Stage I probe"].total) == (32, 64)
    assert (tasks["block 1/2"].completed, tasks["block 1/2"].total, tasks["block 1/2"].fields["info"]) == (1, 3, "loss 0.25")
    assert tasks["Stage II faircalib w4a4"].total == 2
    view({"event": "block_start", "block": 1, "n_blocks": 2, "epochs": 3})     # the epochs bar restarts
    tasks = {t.description: t for t in view._progress.tasks}
    assert "block 1/2" not in tasks and tasks["block 2/2"].completed == 0
    view({"event": "done", "wall_time_s": 1.0})
    assert "block 2/2" not in {t.description for t in view._progress.tasks}   # done drops the epochs bar
    view.close()
    out = buf.getvalue()
    assert "Stage I probe" in out and "32/64 prompts" in out and "eta" in out


def _job(store, tmp_path, job_dict, tiny_model_dir) -> str:
    return store.create_job(JobConfig.from_dict(job_dict(tiny_model_dir, f"file://{tmp_path / 'art'}")))


def test_job_watcher_folds_store_events_into_stage_bars(sqlite_url, tmp_path, job_dict, tiny_model_dir):
    store = JobStore(sqlite_url)
    job = _job(store, tmp_path, job_dict, tiny_model_dir)
    add = store.add_event
    add(job, "stage", "stage probe: running", stage="probe")
    # two probe actors, each on its own range of the 32 prompts: the bar sums the parts
    add(job, "progress", "probe rows 16/32 (shard from 0)", stage="probe",
        data={"event": "probe_batch", "part": 0, "done": 16, "total": 32})
    add(job, "progress", "probe rows 24/32 (shard from 16)", stage="probe",
        data={"event": "probe_batch", "part": 16, "done": 8, "total": 32})
    add(job, "stage", "stage calibrate: running", stage="calibrate")
    add(job, "progress", "block 2/4 epoch 5/10: loss 0.1", stage="calibrate",
        data={"event": "epoch", "block": 1, "n_blocks": 4, "epoch": 5, "epochs": 10, "loss": 0.1})
    add(job, "progress", "upload 50 B/100 B (a)", stage="upload",
        data={"event": "transfer", "direction": "upload", "key": "a", "done": 50, "total": 100})
    add(job, "pool", "evaluate: 2 shards", stage="evaluate")

    con, buf = _console(True)
    view = ProgressView(console=con)
    JobWatcher(store, view, jobs=lambda: [job]).poll()
    bars = {t.description: t for t in view._progress.tasks}
    short = job[:8]
    assert (bars[f"{short} probe"].completed, bars[f"{short} probe"].total) == (24, 32)
    assert (bars[f"{short} calibrate"].completed, bars[f"{short} calibrate"].total) == (1.5, 4)  # 1 block + 5/10
    assert bars[f"{short} calibrate"].fields["info"] == "block 2/4 epoch 5/10: loss 0.1"
    assert (bars[f"{short} upload"].completed, bars[f"{short} upload"].fields["unit"]) == (50, "bytes")
    view.close()
    assert "stage probe: running" in buf.getvalue() and "evaluate: 2 shards" in buf.getvalue()

    # without a terminal: every event is one line (the `faircalib logs` format via the printer)
    con, buf = _console(False)
    lines: list = []
    w = JobWatcher(store, ProgressView(console=con), jobs=lambda: [job], printer=lines.append)
    w.poll()
    assert [e.message for e in lines][1:3] == ["stage probe: running", "probe rows 16/32 (shard from 0)"]
    assert len(lines) == len(store.events(job)) and w.last_id[job] == lines[-1].id
    w.poll()  # nothing new: nothing printed twice
    assert len(lines) == len(store.events(job))


def test_probe_command_prints_its_settings_and_progress(tmp_path):
    r = CliRunner()
    res = r.invoke(main, ["probe", "zoo:tiny-llada", "--n", "4", "--probe-batch", "4", "--out", str(tmp_path / "p")])
    assert res.exit_code == 0, res.output
    err = res.stderr.splitlines()
    assert err[0] == ("Stage I probe: T=16 steps, L=16 window, one block, 4 prompts (model card of zoo:tiny-llada; "
                      "--paper-scale for T = L = 256)")
    assert err[1] == "Stage I probe: 4/4 prompts" or err[1].startswith("Stage I probe: 4/4 prompts [")
    out = json.loads(res.stdout)
    assert out["window"] == 16 and out["n_samples"] == 4
    quiet = r.invoke(main, ["probe", "zoo:tiny-llada", "--n", "4", "--probe-batch", "4", "--quiet",
                            "--out", str(tmp_path / "q")])
    assert quiet.exit_code == 0 and quiet.stderr == "" and json.loads(quiet.stdout)["cache_key"] == out["cache_key"]


def test_probe_settings_resolution():
    from faircalib.orchestrator.commands.calib import PROBE_OPTIONS, _probe_config

    kw = {opt: None for opt in PROBE_OPTIONS} | {"paper_scale": False}  # nothing given on the command line
    cfg, origin = _probe_config(kw, "zoo:tiny-dream")
    assert (cfg.steps, cfg.window, cfg.n_samples, origin) == (16, 16, 512, "model card of zoo:tiny-dream")
    cfg, origin = _probe_config({**kw, "paper_scale": True}, "zoo:tiny-dream")
    assert (cfg.steps, cfg.window, cfg.n_samples, origin) == (256, 256, 512, "paper scale")
    cfg, origin = _probe_config({**kw, "paper_scale": True, "n_samples": 64, "steps": 32}, "zoo:tiny-dream")
    assert (cfg.steps, cfg.window, cfg.n_samples) == (32, 256, 64)  # flags win over the paper scale
    cfg, origin = _probe_config({**kw, "steps": 8, "window": 8, "beta": 0.0}, "zoo:tiny-dream")
    assert (cfg.steps, cfg.window, cfg.prior.beta, origin) == (8, 8, 0.0, "given steps / window")
