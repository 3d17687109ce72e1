"""`faircalib quickstart`: one whole job on the embedded defaults, end to end, with a progress display.

SQLite under $FAIRCALIB_HOME (or --db / $FAIRCALIB_DB), the local SeaweedFS S3 server (started when no
S3 endpoint is configured or running, stopped again at the end unless --keep-storage), a local Ray,
the built-in job (orchestrator/quickstart.py: FAIR-Calib W4A4 on zoo:tiny-llada, CPU-sized), a
scheduler in this process for this job only, then the FP vs W4A4 table, the artifacts URI and the
`faircalib fetch` line. Thin: everything it calls is the service's ordinary machinery.
"""
from __future__ import annotations

import sys
import threading
import time

import click
from faircalib.orchestrator.commands.jobs import (
    _console,
    _db_option,
    _follow,
    _store,
    _validate_job,
    results_table,
)
from faircalib.orchestrator.progress import quiet_option


@click.command("quickstart")
@click.option("--model", default="zoo:tiny-llada", show_default=True,
              help="Model to quantize: zoo:NAME or a model directory (with a tokenizer).")
@click.option("--keep-storage", is_flag=True,
              help="Leave the local S3 server running at the end if this command started it.")
@click.option("--show-job", is_flag=True, help="Print the built-in job YAML and exit.")
@click.option("--ray-address", default=None, help="Use a running Ray cluster instead of a local one.")
@quiet_option
@_db_option
def quickstart_cmd(model: str, keep_storage: bool, show_job: bool, ray_address: str | None, quiet: bool,
                   db_url: str | None) -> None:
    """Run a whole FAIR-Calib W4A4 job on the embedded defaults and print FP vs W4A4 results."""
    from faircalib.orchestrator.quickstart import ensure_local_storage, quickstart_job

    config, text = quickstart_job(model)
    if show_job:
        click.echo(text, nl=False)
        return
    con = _console()
    t0 = time.monotonic()
    _validate_job(config)
    store = _store(db_url)
    con.print(f"[bold]faircalib quickstart[/]: {config.method} {config.bits.upper()} on {config.model}", highlight=False)
    con.print(f"  job store  {store.url_masked}", markup=False, soft_wrap=True)
    storage = ensure_local_storage()
    how = {"started": "started now", "faircalib storage up": "already running"}.get(storage.source,
                                                                                     f"from ${storage.source}")
    con.print(f"  S3         {storage.endpoint or 'AWS'} ({how}); artifacts under {config.storage}", markup=False, soft_wrap=True)
    sched_error: list[BaseException] = []
    job_id = None
    try:
        import ray
        from faircalib.workers.pool import ensure_ray

        ensure_ray(ray_address)
        cpus = ray.cluster_resources().get("CPU", 0)
        gpus = ray.cluster_resources().get("GPU", 0)
        con.print(f"  Ray        {ray_address or 'local'}: {cpus:g} CPU, {gpus:g} GPU", markup=False, soft_wrap=True)
        job_id = store.create_job(config, config_text=text)
        con.print(f"  job        {job_id} ({config.name}); stages: probe -> calibrate -> evaluate -> upload",
                  markup=False, soft_wrap=True)

        from faircalib.orchestrator.scheduler import Scheduler, SchedulerOptions

        sched = Scheduler(store, options=SchedulerOptions(ray_address=ray_address))

        def run_scheduler() -> None:
            try:
                sched.run(once=True, job_ids=[job_id])
            except BaseException as e:  # noqa: BLE001 - reported by the main thread
                sched_error.append(e)

        thread = threading.Thread(target=run_scheduler, name="quickstart-scheduler", daemon=True)
        thread.start()
        try:
            state = _follow(store, job_id, alive=thread.is_alive, con=con, quiet=quiet)
        except KeyboardInterrupt:
            con.print("interrupted: cancelling the job (its finished stages are kept; `faircalib retry "
                      f"{job_id}` resumes it)", markup=False, soft_wrap=True)
            store.request_cancel(job_id)
            thread.join(60)
            raise
        thread.join(30)
        if sched_error:
            raise sched_error[0]
        row = store.get_job(job_id)
        if row.results:
            con.print(results_table(row))
        uri = f"{row.storage_uri}/{row.id}"
        if state == "succeeded":
            con.print(f"artifacts  {uri}/  (checkpoint: calibrate/checkpoint/, report: evaluate/report.md, "
                      "manifest: _manifest.json)", markup=False, soft_wrap=True)
    finally:
        stopped = storage.release(keep_storage)
    if job_id is None:
        return
    fetch = f"faircalib fetch {job_id} ./{job_id}"
    if state == "succeeded":
        if stopped:
            con.print(f"The local S3 server was stopped (its data stays under $FAIRCALIB_HOME/seaweedfs). "
                      f"To download and verify the artifacts:\n  faircalib storage up && {fetch}", markup=False, soft_wrap=True)
        else:
            con.print(f"To download and verify the artifacts:\n  {fetch}", markup=False, soft_wrap=True)
        con.print(f"done in {time.monotonic() - t0:.0f}s; more: faircalib status {job_id} | faircalib logs {job_id} "
                  f"| faircalib results {job_id} --json", markup=False, soft_wrap=True)
    else:
        con.print(f"the job {state}; see `faircalib logs {job_id} --file`", markup=False, soft_wrap=True)
        sys.exit(1)


def register(root: click.Group) -> None:
    root.add_command(quickstart_cmd)
