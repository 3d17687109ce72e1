"""`faircalib submit | run | status | logs | cancel | retry | results | fetch | sweep`.

Thin: parse options, call the store / scheduler / storage, print. The job database is
`--db URL` or $FAIRCALIB_DB (default: SQLite under $FAIRCALIB_HOME)."""
from __future__ import annotations

import json
import signal
import sys
import time
from collections import Counter
from pathlib import Path

import click
from faircalib.orchestrator.progress import JobWatcher, ProgressView, quiet_option

_db_option = click.option("--db", "db_url", envvar="FAIRCALIB_DB", default=None, metavar="URL",
                          help="Job database URL (default: $FAIRCALIB_DB or sqlite under $FAIRCALIB_HOME).")


def _store(db_url: str | None):
    from faircalib.orchestrator.store import JobStore

    return JobStore(db_url)


def _console():
    """Rich console; when stdout is not a terminal (a log, a pipe, CI) lines are 120 wide, not 80."""
    import os

    from rich.console import Console

    width = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 120
    return Console(highlight=False, width=width)


def _fmt_ts(ts) -> str:
    return ts.strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def _duration(job) -> str:
    if not job.started_at:
        return "-"
    end = job.finished_at or __import__("faircalib.orchestrator.store", fromlist=["utcnow"]).utcnow()
    return f"{(end - job.started_at).total_seconds():.1f}s"


# ---------------------------------------------------------------- submit
def _validate_job(config):
    """Evaluation task names known? zoo model names known? (directories are checked at run)."""
    from faircalib.orchestrator.stages import DEFAULT_REGISTRY

    from faircalib.models.loader import resolve_source

    DEFAULT_REGISTRY.validate(config)
    if config.model.startswith("zoo:"):
        resolve_source(config.model)


def _probe_note(config, raw) -> str | None:
    """A hint when a job probes at the library's default T / L (the paper's 256 / 256) although the model
    decodes at other settings: the job file left probe.steps / window out (the job file keeps the
    library's defaults; `faircalib probe` / `quantize` use the model's)."""
    if not config.run.uses_prior:
        return None
    given = (raw.get("probe") or {}) if isinstance(raw, dict) else {}
    if not isinstance(given, dict) or ("steps" in given and "window" in given):
        return None
    from faircalib.errors import FaircalibError
    from faircalib.probe import probe_defaults

    try:
        model_cfg, origin = probe_defaults(config.model)
    except (FaircalibError, OSError):
        return None
    p = config.run.probe
    if (p.steps, p.window) == (model_cfg.steps, model_cfg.window):
        return None
    return (f"note: Stage I probes at T={p.steps} L={p.window} (the library's default, the paper's scale); the "
            f"model decodes at T={model_cfg.steps} L={model_cfg.window} ({origin}): set probe.steps / "
            f"probe.window in the job file to probe at that")


def _read_text(path: Path, what: str) -> str:
    """A job or sweep file's text; ConfigError (one line) when it cannot be read or is not UTF-8."""
    from faircalib.errors import ConfigError

    try:
        return path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{what} {str(path)!r}: cannot read it ({e.strerror or e}); check the path") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"{what} {str(path)!r} is not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset "
                          f"{e.start}); save it as UTF-8 YAML") from None


def _reject(store, reason: str, text: str | None, raw) -> str:
    fields = raw if isinstance(raw, dict) else {}
    return store.record_rejected(reason, config_text=text, name=str(fields.get("name") or "rejected"),
                                 model=str(fields.get("model", "?")), method=str(fields.get("method", "?")),
                                 bits=str(fields.get("bits", "?")))


@click.command("submit")
@click.argument("job_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--wait", is_flag=True, help="Follow the job's progress until it ends.")
@click.option("--run", "run_here", is_flag=True, help="Also run a scheduler in this process until the queue is empty.")
@click.option("--ray-address", default=None, help="With --run: Ray cluster to use (default: local).")
@quiet_option
@_db_option
def submit_cmd(job_file: Path, wait: bool, run_here: bool, ray_address: str | None, quiet: bool,
               db_url: str | None) -> None:
    """Validate JOB_FILE (YAML) and queue it. A file that cannot be read is refused (no job is recorded);
    invalid contents are recorded as a failed job with the reason. With --wait / --run, each running
    stage's progress is shown live (bars on a terminal, event lines otherwise)."""
    from faircalib.orchestrator.config import JobConfig, parse_yaml

    from faircalib.errors import FaircalibError

    text, raw = None, None
    try:
        text = job_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        why = getattr(e, "strerror", None) or (f"not UTF-8 text: {e.reason}" if isinstance(e, UnicodeDecodeError)
                                               else str(e))
        raise click.ClickException(f"job file {str(job_file)!r}: cannot read it ({why}); check the path "
                                   f"(no job was recorded)") from e
    store = _store(db_url)
    try:
        raw = parse_yaml(text, str(job_file))
        config = JobConfig.from_dict(raw)
        _validate_job(config)
    except FaircalibError as e:
        job_id = _reject(store, str(e), text, raw)
        raise click.ClickException(f"{e} (recorded as failed job {job_id})") from e
    job_id = store.create_job(config, config_text=text)
    click.echo(job_id)
    note = None if quiet else _probe_note(config, raw)
    if note:
        click.echo(note, err=True)
    after = 0
    if run_here:
        from faircalib.orchestrator.scheduler import Interrupted

        _ensure_default_storage(store, [job_id])
        con = _console()
        try:  # SIGINT / SIGTERM cancel the job (recorded with the reason); `faircalib retry` resumes it
            with ProgressView(quiet=quiet, console=con) as view:
                watcher = JobWatcher(store, view, jobs=lambda: [job_id], printer=lambda e: _print_event(con, e))
                _run_scheduler(store, once=True, ray_address=ray_address, watcher=watcher, interrupt="cancel",
                               interrupt_signals=(signal.SIGINT, signal.SIGTERM), origin="`faircalib submit --run`")
        except (Interrupted, KeyboardInterrupt) as e:
            name = getattr(e, "signal_name", "SIGINT")
            row = store.get_job(job_id)
            click.echo(f"interrupted by {name}: job {job_id} {row.state.value}" + (f": {row.reason}" if row.reason
                                                                                     else ""), err=True)
            sys.exit(128 + int(getattr(signal, name, signal.SIGINT)))
        after = watcher.last_id.get(job_id, 0)
    if wait or run_here:
        state = _follow(store, job_id, after_id=after, quiet=quiet)
        if state != "succeeded":
            sys.exit(1)
        _print_results(store.get_job(job_id))


# ---------------------------------------------------------------- run
def _ensure_default_storage(store, job_ids: list[str] | None = None) -> None:
    """Jobs on the embedded default storage (s3://faircalib/...) with no S3 endpoint configured or
    running: start the local S3 server the way quickstart does (it keeps running; `faircalib storage
    down` stops it), or fail with the fix."""
    from faircalib.service.storage import NO_LOCAL_SERVER, resolve_endpoint, uses_local_default

    from faircalib.errors import FaircalibError

    endpoint, _ = resolve_endpoint()
    if endpoint is not None:
        return
    rows = [store.get_job(j) for j in job_ids] if job_ids else store.list_jobs(state="queued", limit=1000)
    if not any(r.storage_uri and uses_local_default(r.storage_uri) for r in rows):
        return
    from faircalib.orchestrator.quickstart import ensure_local_storage

    try:
        started = ensure_local_storage()
    except FaircalibError as e:
        raise click.ClickException(f"storage s3://faircalib: {NO_LOCAL_SERVER} (starting it here failed: "
                                   f"{str(e).splitlines()[0]})") from e
    click.echo(f"started the local S3 server at {started.endpoint} for the jobs' default storage "
               "(`faircalib storage down` stops it)", err=True)


def _run_scheduler(store, *, once: bool, ray_address: str | None, max_jobs: int | None = None,
                   stop_after: int | None = None, lease_s: float = 30.0, heartbeat_s: float = 5.0,
                   job_ids: list[str] | None = None,
                   watcher=None, interrupt: str = "requeue", interrupt_signals: tuple = (),
                   origin: str = "`faircalib run`"):
    """Run a scheduler here (up to max_jobs jobs at once; at most stop_after jobs); `watcher` (a JobWatcher
    with jobs=None) renders the progress of the jobs it runs.
    SIGTERM (unless in interrupt_signals): finish the current job, then exit. A signal in interrupt_signals
    (and SIGINT, Ctrl-C): stop the running job at its next check and requeue or cancel it (`interrupt`),
    recorded as an event; then Interrupted is raised. A second such signal raises Interrupted at once (the
    job is still ended the same way, best effort)."""
    from faircalib.orchestrator.scheduler import Interrupted, Scheduler, SchedulerOptions

    sched = Scheduler(store, options=SchedulerOptions(ray_address=ray_address, lease_s=lease_s,
                                                      heartbeat_s=heartbeat_s, on_interrupt=interrupt,
                                                      interrupt_origin=origin, max_jobs=max_jobs))
    if watcher is not None:
        watcher.jobs = watcher.jobs or (lambda: list(sched.jobs_run))
        watcher.start()

    def _term(signum, frame):  # finish the current job, then exit
        sched.request_stop()

    def _interrupt(signum, frame):
        name = signal.Signals(signum).name
        if sched.interrupted:
            raise Interrupted(name)  # a second signal: stop now
        sched.interrupt(name)

    handlers = {signal.SIGTERM: _term} | {sig: _interrupt for sig in (signal.SIGINT, *interrupt_signals)}
    old = {sig: signal.signal(sig, h) for sig, h in handlers.items()}
    try:
        requeued = sched.start()
        if requeued:
            click.echo(f"requeued {len(requeued)} job(s) of a stopped scheduler: {', '.join(requeued)}", err=True)
        ran = sched.run(once=once, stop_after=stop_after, job_ids=job_ids)
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)
        if watcher is not None:
            watcher.stop()
    if sched.interrupted:
        raise Interrupted(sched.interrupted)
    return ran


@click.command("run")
@click.option("--once", is_flag=True, help="Drain the queue, then exit.")
@click.option("--ray-address", default=None, help="Join a running Ray cluster (e.g. auto, ray://HOST:10001).")
@click.option("--max-jobs", type=click.IntRange(min=1), default=None, metavar="K",
              help="Run up to K jobs at once (default: as many as the Ray cluster's CPUs / GPUs fit, given each "
                   "job's resources; at least 1).")
@click.option("--stop-after", type=click.IntRange(min=1), default=None, metavar="N", help="Exit after N jobs.")
@click.option("--lease-s", type=float, default=30.0, show_default=True,
              help="A scheduler silent this long is presumed dead; its running jobs are requeued.")
@click.option("--heartbeat-s", type=float, default=5.0, show_default=True,
              help="Seconds between lease renewals (capped at a quarter of --lease-s).")
@quiet_option
@_db_option
def run_cmd(once: bool, ray_address: str | None, max_jobs: int | None, stop_after: int | None, lease_s: float,
            heartbeat_s: float, quiet: bool, db_url: str | None) -> None:
    """Run the scheduler: claim queued jobs (up to --max-jobs at once) and drive them through their stages.
    Each running job's stage progress is shown live on stderr (bars on a terminal, one line per event
    otherwise)."""
    from faircalib.orchestrator.progress import stderr_console

    store = _store(db_url)
    click.echo(f"scheduler on {store.url_masked}" + (f", Ray at {ray_address}" if ray_address else ""), err=True)
    from faircalib.orchestrator.scheduler import Interrupted

    _ensure_default_storage(store)
    try:  # Ctrl-C: the running job goes back to the queue (recorded); SIGTERM: finish it, then exit
        with ProgressView(quiet=quiet, console=stderr_console()) as view:
            ran = _run_scheduler(store, once=once, ray_address=ray_address, max_jobs=max_jobs, stop_after=stop_after,
                                 lease_s=lease_s, heartbeat_s=heartbeat_s,
                                 watcher=JobWatcher(store, view, jobs=None, keep_finished=False))
    except (Interrupted, KeyboardInterrupt) as e:
        name = getattr(e, "signal_name", "SIGINT")
        click.echo(f"interrupted by {name}; the running job (if any) was requeued", err=True)
        sys.exit(128 + int(getattr(signal, name, signal.SIGINT)))
    not_ok = 0
    for job_id in ran:
        job = store.get_job(job_id)
        not_ok += job.state.value != "succeeded"
        click.echo(f"{job_id} {job.state.value}" + (f": {job.reason}" if job.reason else ""))
    if not_ok:  # the exit code reflects the jobs this scheduler ran
        click.echo(f"{not_ok} of {len(ran)} job(s) did not succeed", err=True)
        sys.exit(1)


# ---------------------------------------------------------------- status / logs / follow
def _job_dict(store, job) -> dict:
    d = job.as_dict()
    d["stages"] = [{"name": s.name, "state": s.state, "attempt": s.attempt, "error": s.error,
                    "output": s.output} for s in store.stages(job.id)]
    d["artifacts"] = len(store.artifacts(job.id))
    return d


@click.command("status")
@click.argument("job", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--state", type=click.Choice(["queued", "running", "succeeded", "failed", "cancelled"]), default=None)
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--sweep", "sweep", default=None, metavar="ID", help="Only the jobs of this sweep (id or prefix).")
@_db_option
def status_cmd(job: str | None, as_json: bool, state: str | None, limit: int, sweep: str | None,
               db_url: str | None) -> None:
    """Show jobs (newest first), or one JOB with its stages."""
    from rich.markup import escape
    from rich.table import Table

    store = _store(db_url)
    sweep_id = store.resolve_sweep(sweep) if sweep else None
    if job:
        row = store.get_job(store.resolve(job))
        d = _job_dict(store, row)
        if as_json:
            click.echo(json.dumps(d, indent=1, default=str))
            return
        con = _console()
        con.print(f"[bold]{escape(row.id)}[/] {escape(row.name)}  [bold]{row.state.value}[/]  attempt {row.attempt}  "
                  f"{escape(row.method)}/{escape(row.bits)}  {escape(row.model)}")
        if row.reason:
            con.print(f"reason: {row.reason}", markup=False)
        t = Table("stage", "state", "attempt", "detail")
        for s in d["stages"]:
            t.add_row(*_plain(s["name"], s["state"], s["attempt"], s["error"] or ""))
        con.print(t)
        con.print(f"storage: {row.storage_uri}/{row.id}  artifacts: {d['artifacts']}  "
                  f"created {_fmt_ts(row.created_at)}  ran {_duration(row)}", markup=False)
        return
    rows = store.list_jobs(state=state, sweep_id=sweep_id, limit=limit)
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in rows], indent=1, default=str))
        return
    t = Table("id", "name", "state", "method", "bits", "created", "ran", "reason",
              title=f"sweep {sweep_id}: {len(rows)} jobs, " + ", ".join(
                  f"{n} {st}" for st, n in sorted(Counter(r.state.value for r in rows).items()))
              if sweep_id else None, title_justify="left")
    for r in rows:
        t.add_row(*_plain(r.id, r.name, r.state.value, r.method, r.bits, _fmt_ts(r.created_at), _duration(r),
                          (r.reason or "")[:80]))
    _console().print(t)


def _plain(*values):
    """Table cells shown as they are: job text (names, models, reasons) is never read as rich markup."""
    from rich.text import Text

    return [Text(str(v)) for v in values]


def _print_event(con, e) -> None:
    stage = f"[{e.stage}] " if e.stage else ""
    con.print(f"{_fmt_ts(e.ts)} {e.kind:<10} {stage}{e.message}", markup=False, soft_wrap=True)


def _follow(store, job_id: str, *, poll_s: float = 0.5, after_id: int = 0, alive=None, con=None,
            quiet: bool = False) -> str:
    """Show the job's events as they arrive until the job is terminal (or until `alive()` turns False:
    the scheduler running it here is gone): on a terminal a live bar per running stage plus a line per
    state change and milestone, otherwise one line per event; only the final line when quiet."""
    con = con or _console()
    view = ProgressView(quiet=quiet, console=con)
    watcher = JobWatcher(store, view, jobs=lambda: [job_id], printer=lambda e: _print_event(con, e))
    watcher.last_id[job_id] = after_id
    with view:
        if view.live and store.get_job(job_id).state.value == "queued":
            view.note("waiting for a scheduler to claim the job...")
        while True:
            watcher.poll()
            job = store.get_job(job_id)
            if job.state.is_terminal() or (alive is not None and not alive()):
                break
            time.sleep(poll_s)
        watcher.poll()
    from rich.markup import escape

    job = store.get_job(job_id)
    con.print(f"job {job_id}: [bold]{job.state.value}[/]" + (f" after {_duration(job)}" if job.finished_at else "")
              + (f": {escape(job.reason)}" if job.reason else ""), soft_wrap=True)
    return job.state.value


@click.command("logs")
@click.argument("job")
@click.option("--follow", "-f", is_flag=True, help="Keep printing until the job ends.")
@click.option("--file", "log_file", is_flag=True, help="Print the captured job log (local, else from storage).")
@_db_option
def logs_cmd(job: str, follow: bool, log_file: bool, db_url: str | None) -> None:
    """Print a job's events (state changes, stage progress, worker progress)."""
    store = _store(db_url)
    job_id = store.resolve(job)
    if log_file:
        click.echo(_read_job_log(store, job_id), nl=False)
        return
    if follow:
        _follow(store, job_id)
        return
    con = _console()
    for e in store.events(job_id):
        _print_event(con, e)


def _read_job_log(store, job_id: str) -> str:
    from faircalib.service.paths import home

    local = home() / "work" / job_id / "logs" / "job.log"
    if local.is_file():
        return local.read_text(encoding="utf-8", errors="replace")
    job = store.get_job(job_id)
    if not job.storage_uri:
        raise click.ClickException(f"job {job_id} has no log (it was rejected at submit: {job.reason})")
    from faircalib.service.storage import open_storage

    return open_storage(job.storage_uri).child(job_id).get_bytes("logs/job.log").decode(errors="replace")


# ---------------------------------------------------------------- cancel / retry
@click.command("cancel")
@click.argument("job")
@_db_option
def cancel_cmd(job: str, db_url: str | None) -> None:
    """Cancel a queued job, or ask a running one to stop."""
    store = _store(db_url)
    job_id = store.resolve(job)
    state = store.request_cancel(job_id)
    click.echo(f"{job_id} cancelled" if state.value == "cancelled" else f"{job_id}: cancel requested (running)")


@click.command("retry")
@click.argument("job")
@_db_option
def retry_cmd(job: str, db_url: str | None) -> None:
    """Queue a failed or cancelled job again; it resumes after its last succeeded stage."""
    store = _store(db_url)
    job_id = store.resolve(job)
    store.retry(job_id)
    done = [s.name for s in store.stages(job_id) if s.state == "succeeded"]
    click.echo(f"{job_id} queued" + (f"; reusing {', '.join(done)}" if done else ""))


# ---------------------------------------------------------------- results / fetch
@click.command("results")
@click.argument("job", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--sweep", "sweep", default=None, metavar="ID",
              help="One comparison table of a sweep's jobs (id or prefix) instead of one job.")
@_db_option
def results_cmd(job: str | None, as_json: bool, sweep: str | None, db_url: str | None) -> None:
    """Print a job's evaluation results, or (--sweep ID) a sweep's comparison table."""
    store = _store(db_url)
    if sweep:
        _sweep_results(store, store.resolve_sweep(sweep), as_json)
        return
    if not job:
        raise click.UsageError("give a JOB id, or --sweep ID")
    row = store.get_job(store.resolve(job))
    if as_json:
        click.echo(json.dumps({"id": row.id, "name": row.name, "state": row.state.value, "method": row.method,
                               "bits": row.bits, "model": row.model, "results": row.results}, indent=1))
        return
    if not row.results:
        raise click.ClickException(f"job {row.id} ({row.state.value}) has no results yet"
                                   + (f": {row.reason}" if row.reason else ""))
    _print_results(row)


def results_table(row):
    """A rich Table: one row per (task, metric), FP next to the quantized model, Δ, wall time per model."""
    from faircalib.orchestrator.report import fmt, fmt_delta, fmt_wall, rows
    from rich.table import Table
    from rich.text import Text

    quant = row.method != "fp"
    what = f"{row.method} {row.bits.upper()} vs FP" if quant else "FP"
    t = Table(title=Text(f"{row.name}: {what} (job {row.id}, {row.state.value})"), title_justify="left")
    t.add_column("task")
    t.add_column("metric")
    t.add_column("FP", justify="right")
    if quant:
        t.add_column(row.bits.upper(), justify="right")
        t.add_column("Δ", justify="right")
    t.add_column("n", justify="right")
    t.add_column("wall s" + (" FP / Q" if quant else ""), justify="right")
    last = None
    for r in rows(row.results):
        task = ("" if r.task == last else (f"[{r.task}]" if r.group else r.task))
        last = r.task
        cells = [task, r.metric, fmt(r.values.get("fp"), r.stderr.get("fp"))]
        if quant:
            cells += [fmt(r.values.get("quantized"), r.stderr.get("quantized")), fmt_delta(r.delta)]
        cells += ["" if r.n is None or not r.wall_s else str(r.n), fmt_wall(r.wall_s)]
        t.add_row(*map(Text, cells))
    return t


def _sweep_results(store, sweep_id: str, as_json: bool) -> None:
    """Rows model x method x bits x probe setting; per metric its value and Δ vs FP."""
    from faircalib.orchestrator.report import fmt, fmt_delta, sweep_comparison
    from rich.table import Table
    from rich.text import Text

    jobs = store.list_jobs(sweep_id=sweep_id, limit=10_000)
    cmp = sweep_comparison(jobs)
    if as_json:
        click.echo(json.dumps({"sweep": sweep_id, **cmp}, indent=1, default=str))
        return
    done = sum(r["state"] == "succeeded" for r in cmp["rows"])
    t = Table(title=f"sweep {sweep_id}: {done}/{len(cmp['rows'])} jobs succeeded; each metric, then its Δ vs FP",
              title_justify="left")
    for col in ("model", "method", "bits", "probe", "state"):
        t.add_column(col)
    for m in cmp["metrics"]:
        t.add_column(m, justify="right")
        t.add_column("Δ", justify="right")
    for r in cmp["rows"]:
        cells = [r["model"].removeprefix("zoo:"), r["method"], r["bits"], r["probe"], r["state"]]
        for m in cmp["metrics"]:
            v = r["values"].get(m) or {}
            cells += [fmt(v.get("value")), fmt_delta(v.get("delta"))]
        t.add_row(*map(Text, cells))
    _console().print(t)


def _print_results(row) -> None:
    _console().print(results_table(row))


@click.command("fetch")
@click.argument("job")
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Write into a non-empty DEST (files there are overwritten).")
@quiet_option
@_db_option
def fetch_cmd(job: str, dest: Path, force: bool, quiet: bool, db_url: str | None) -> None:
    """Download a finished job's artifacts to DEST (new or empty unless --force) and verify every object
    against the sha256 the job store recorded at upload (the bucket's manifest is cross-checked too)."""
    from faircalib.orchestrator.fetch import fetch_job

    store = _store(db_url)
    row = store.get_job(store.resolve(job))
    t0 = time.monotonic()
    with ProgressView(quiet=quiet) as view:
        got = fetch_job(store, row, dest, force=force, progress=view)
    click.echo(f"fetched {got.objects} objects ({got.bytes / 1e6:.2f} MB) from {got.uri} to {dest} in "
               f"{time.monotonic() - t0:.1f}s; all sha256 verified against the job store's upload records")


# ---------------------------------------------------------------- sweep
@click.command("sweep")
@click.argument("sweep_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Validate and list the jobs without queueing them.")
@_db_option
def sweep_cmd(sweep_file: Path, dry_run: bool, db_url: str | None) -> None:
    """Expand SWEEP_FILE (base job x grid of models, methods, bits, probe settings) into jobs. Jobs with
    equal prior keys share one cached prior (built once, by whichever job gets there first)."""
    from faircalib.orchestrator.config import SweepConfig, parse_yaml
    from faircalib.orchestrator.store import new_job_id

    from faircalib.errors import FaircalibError

    store = None if dry_run else _store(db_url)
    text = None
    try:
        text = _read_text(sweep_file, "sweep file")
        sweep = SweepConfig.from_dict(parse_yaml(text, str(sweep_file)))
        for cfg in sweep.jobs:
            _validate_job(cfg)
        keys = _prior_keys(sweep.jobs)
    except (FaircalibError, OSError) as e:
        reason = str(e).splitlines()[0] if not isinstance(e, OSError) else f"sweep file {str(sweep_file)!r}: {e}"
        if store is not None:
            job_id = store.record_rejected(f"sweep rejected: {reason}", config_text=text, name="sweep")
            raise click.ClickException(f"{reason} (recorded as failed job {job_id})") from e
        raise click.ClickException(reason) from e
    distinct = len({k for k in keys if k})
    if dry_run:
        for cfg, key in zip(sweep.jobs, keys):
            click.echo(f"{cfg.name}  {cfg.method}/{cfg.bits}  {cfg.model}" + (f"  prior {key[:12]}" if key else ""))
        click.echo(f"{len(sweep.jobs)} jobs, {distinct} distinct priors")
        return
    sweep_id = new_job_id()
    ids = [store.create_job(cfg, sweep_id=sweep_id, prior_key=key) for cfg, key in zip(sweep.jobs, keys)]
    click.echo(f"sweep {sweep.name}: {len(ids)} jobs queued, {distinct} distinct priors")
    for job_id, cfg in zip(ids, sweep.jobs):
        click.echo(f"{job_id} {cfg.name}")
    click.echo(f"sweep id: {sweep_id}  (faircalib status --sweep {sweep_id} | faircalib results --sweep {sweep_id})")


def _prior_keys(configs) -> list[str | None]:
    from faircalib.orchestrator.priors import job_prior_key

    from faircalib.models import weights_hash

    hashes: dict[str, str] = {}
    keys = []
    for cfg in configs:
        if cfg.uses_prior and cfg.model not in hashes:
            hashes[cfg.model] = weights_hash(cfg.model)
        keys.append(job_prior_key(cfg, hashes.get(cfg.model)))
    return keys


def register(root: click.Group) -> None:
    for cmd in (submit_cmd, run_cmd, status_cmd, logs_cmd, cancel_cmd, retry_cmd, results_cmd, fetch_cmd,
                sweep_cmd):
        root.add_command(cmd)
