"""The scheduler: claims queued jobs from the store and drives each through its stages.

Boundary: control flow, persistence of progress, and failure handling. Stage bodies live in
`stages.py`; the math lives in `faircalib`.

- Start: register in `schedulers`, start a heartbeat thread (the lease), reconcile: running jobs whose
  scheduler stopped or missed its lease go back to queued (their finished stages are kept).
- Loop: `claim()` (SKIP LOCKED on PostgreSQL, atomic update on SQLite) -> run the job on a thread of
  its own -> repeat, with up to `max_jobs` jobs at once. The default follows the Ray cluster and each
  job's request: another job is claimed while the running jobs' peak CPU / GPU requests plus the next
  job's fit the cluster's totals (always at least one job). `run(once=True)` drains the queue and returns.
- Warm workers: one `WarmPool` of Ray actors per scheduler, shared by every stage of every job it
  runs (faircalib.workers.pool), so actor start-up and model loads are paid once per scheduler.
- A job: validate its config (the library's settings classes, task names), preflight (the model
  resolves, the storage is writable), then each stage in order. Succeeded stages are skipped (their outputs reused),
  so a retry or a requeued job resumes at the next incomplete stage. Every write is fenced by the
  claim's `attempt`. A FaircalibError fails the job with its one-line message as the reason; any
  other exception fails it as an internal error with the traceback in the job log.
- Signals: `interrupt()` (the CLI's SIGINT / SIGTERM handlers call it; it only sets flags) stops the
  running job at its next stop check and requeues or cancels it (`SchedulerOptions.on_interrupt`),
  recorded as the transition's event; `request_stop()` (SIGTERM of `faircalib run`) finishes it first.
  Heartbeats continue until the scheduler really stops, so a draining scheduler keeps its lease.
- Logs: each job's events and the process's log records go to <workdir>/logs/job.log, uploaded with
  the job (and on failure, best effort, so the reason survives the machine).
"""
from __future__ import annotations

import logging
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from faircalib.orchestrator.errors import TransitionConflict
from faircalib.orchestrator.stages import DEFAULT_REGISTRY, StageContext, StageRegistry
from faircalib.orchestrator.store import JobRow, JobState, JobStore
from faircalib.service.errors import JobCancelled, StorageError

from faircalib.errors import FaircalibError

log = logging.getLogger(__name__)


class Interrupted(BaseException):
    """Raised after `run()` when a signal interrupted the scheduler (see `Scheduler.interrupt`), or from a
    second signal to stop at once. Like KeyboardInterrupt it is not an Exception, so no stage swallows it;
    `run_job` ends the current job (SchedulerOptions.on_interrupt) and re-raises it."""

    def __init__(self, signal_name: str = "SIGINT"):
        super().__init__(signal_name)
        self.signal_name = signal_name


@dataclass
class SchedulerOptions:
    heartbeat_s: float = 5.0
    lease_s: float = 30.0          # a scheduler silent this long is presumed dead
    poll_s: float = 1.0            # idle wait between claims
    cancel_check_s: float = 1.0    # how often a running job re-reads cancel_requested
    ray_address: str | None = None
    workdir_root: Path | None = None  # default $FAIRCALIB_HOME/work
    preflight: bool = True
    # what an interrupt (Interrupted / KeyboardInterrupt) does to the running job: "requeue" (back to queued,
    # finished stages kept: another scheduler resumes it) or "cancel" (cancelled; `faircalib retry` resumes it)
    on_interrupt: str = "requeue"
    interrupt_origin: str = "the scheduler"  # named in the job's reason / event
    max_jobs: int | None = None    # jobs at once; None: from the cluster's resources and the jobs' requests
    warm: bool = True              # keep Ray actors (and their loaded models) between stages and jobs
    max_idle_workers: int = 8      # the warm pool's bound on idle actors

    def __post_init__(self) -> None:
        # the scheduler reconciles every lease_s (requeueing running jobs whose scheduler missed its lease), so
        # its own heartbeat must come well inside the lease or it would requeue its own jobs
        self.heartbeat_s = min(self.heartbeat_s, self.lease_s / 4)


def job_request(config, has_gpu: bool) -> tuple[float, float]:
    """A job's peak Ray request (CPUs, GPUs) over its stages: its widest stage's actors at once (GPUs
    count as 0 on a cluster without any: the workers fall back to CPU)."""
    r = config.resources
    widths = [(r.probe_workers if config.uses_prior else 0, r.gpus_per_worker),
              (1 if config.run.spec.quantizes else 0, r.calibration_gpus), (r.eval_workers, r.gpus_per_worker)]
    cpus = max(n * r.cpus_per_worker for n, _ in widths)
    gpus = max(n * g for n, g in widths) if has_gpu else 0.0
    return cpus, gpus


class _JobLog:
    """Appends a job's events to its log file and captures log records while the job runs."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.fh = open(path, "a", encoding="utf-8")
        self.handler = logging.StreamHandler(self.fh)
        self.handler.setLevel(logging.INFO)
        thread = threading.get_ident()  # this job's thread only: jobs run side by side
        self.handler.addFilter(lambda record: record.thread == thread)
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def __enter__(self) -> _JobLog:
        logging.getLogger().addHandler(self.handler)
        return self

    def write(self, line: str) -> None:
        self.fh.write(f"{datetime.now(timezone.utc).isoformat(timespec='milliseconds')} {line}\n")
        self.fh.flush()

    def __exit__(self, *exc) -> None:
        logging.getLogger().removeHandler(self.handler)
        self.fh.close()


def _import_before_threads() -> None:
    """Resolve transformers' lazy attributes once, before jobs run on threads side by side: its lazy
    module is not thread-safe (two threads' first `from transformers import AutoTokenizer` can fail
    with an ImportError)."""
    try:
        from transformers import AutoTokenizer, PreTrainedTokenizerFast  # noqa: F401
    except ImportError:  # no transformers: nothing to protect
        pass


@dataclass
class Scheduler:
    store: JobStore
    registry: StageRegistry = DEFAULT_REGISTRY
    options: SchedulerOptions = field(default_factory=SchedulerOptions)
    id: str | None = None

    def __post_init__(self) -> None:
        self._stop = threading.Event()      # claim no more jobs
        self._hb_stop = threading.Event()   # stop heartbeating (only when the scheduler really stops)
        self._hb_thread: threading.Thread | None = None
        self.jobs_run: list[str] = []
        self.interrupted: str | None = None  # the signal that interrupted the running job, if any
        self._pool = None
        self._lock = threading.Lock()
        self.peak_concurrency = 0

    # ------------------------------------------------------------ lifecycle
    def start(self) -> list[str]:
        """Register, start heartbeating, reconcile orphaned running jobs; returns the requeued ids."""
        self.id = self.store.register_scheduler()
        self._hb_thread = threading.Thread(target=self._heartbeat_loop, daemon=True, name="scheduler-heartbeat")
        self._hb_thread.start()
        requeued = self.store.reconcile(self.options.lease_s)
        for job_id in requeued:
            log.warning("requeued job %s (its scheduler is gone)", job_id)
        return requeued

    def _heartbeat_loop(self) -> None:
        while not self._hb_stop.wait(self.options.heartbeat_s):
            try:
                self.store.heartbeat(self.id)
            except Exception as e:  # noqa: BLE001 - keep trying; a long outage ends our lease
                log.warning("heartbeat failed: %s", e)

    def stop(self) -> None:
        self._stop.set()
        self._hb_stop.set()
        if self._hb_thread is not None:
            self._hb_thread.join(timeout=5)
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        if self.id is not None:
            self.store.stop_scheduler(self.id)

    def request_stop(self) -> None:
        """Ask `run()` to return after the running jobs (e.g. on SIGTERM); the lease is kept meanwhile."""
        self._stop.set()

    def interrupt(self, signal_name: str) -> None:
        """Stop the running job at its next stop check (the pool polls every 0.25 s; a stage that does not
        poll finishes first) and end it per options.on_interrupt, recorded as an event; then `run()`
        returns. Only sets flags: safe in a signal handler (raising there would land inside Ray's C code)."""
        self.interrupted = signal_name
        self._stop.set()

    @property
    def pool(self):
        """The warm actor pool (made on first use; None with options.warm off)."""
        if not self.options.warm:
            return None
        with self._lock:
            if self._pool is None:
                from faircalib.workers.pool import WarmPool

                self._pool = WarmPool(max_idle=self.options.max_idle_workers)
            return self._pool

    def _admits(self, running: dict, job_ids: list[str] | None) -> bool:
        """May another job start next to `running` ({job id: (thread, config)})?"""
        if not running:
            return True
        k = self.options.max_jobs
        if k is not None:
            return len(running) < k
        if self.registry is not DEFAULT_REGISTRY:
            return False  # custom stages: their resources are unknown, one job at a time
        import ray

        if not ray.is_initialized():
            return False
        nxt = self.store.next_queued(job_ids)
        if nxt is None:
            return False
        total = ray.cluster_resources()
        has_gpu = total.get("GPU", 0.0) > 0
        want = [job_request(cfg, has_gpu) for _, cfg in running.values()] + [job_request(nxt.config, has_gpu)]
        return (sum(c for c, _ in want) <= total.get("CPU", 0.0) + 1e-9
                and sum(g for _, g in want) <= total.get("GPU", 0.0) + 1e-9)

    def run(self, *, once: bool = False, stop_after: int | None = None,
            job_ids: list[str] | None = None) -> list[str]:
        """Claim and run jobs, several at once (options.max_jobs), until stopped (or, with once, until
        the queue is empty and the claimed jobs are done); only the jobs in `job_ids` when given; at most
        `stop_after` jobs."""
        if self.id is None:
            self.start()
        if self.options.max_jobs != 1:
            _import_before_threads()
        last_reconcile = time.monotonic()
        running: dict[str, tuple[threading.Thread, object]] = {}
        try:
            while not self._stop.is_set():
                for jid in [j for j, (t, _) in running.items() if not t.is_alive()]:
                    running.pop(jid)[0].join()
                room = stop_after is None or len(self.jobs_run) < stop_after
                job = self.store.claim(self.id, job_ids) if room and self._admits(running, job_ids) else None
                if job is not None:
                    try:
                        cfg = job.config
                    except Exception:  # noqa: BLE001 - run_job records the reason
                        cfg = None
                    if self.registry is DEFAULT_REGISTRY and cfg is not None:
                        # connect (or start the local Ray) here, on the main thread, not on the job's:
                        # Ray's signal handling and shutdown expect the thread that called ray.init
                        from faircalib.workers.pool import ensure_ray

                        try:
                            ensure_ray(self.options.ray_address)
                        except Exception:  # noqa: BLE001 - the job's stage tries again and fails with the reason
                            pass
                    t = threading.Thread(target=self.run_job, args=(job,), daemon=True, name=f"job-{job.id}")
                    self.jobs_run.append(job.id)
                    running[job.id] = (t, cfg)
                    self.peak_concurrency = max(self.peak_concurrency, len(running))
                    t.start()
                    continue
                if not running and (once or not room):
                    break
                if time.monotonic() - last_reconcile > self.options.lease_s:
                    self.store.reconcile(self.options.lease_s)
                    last_reconcile = time.monotonic()
                self._stop.wait(self.options.poll_s if not running else min(self.options.poll_s, 0.2))
            for t, _ in running.values():  # a stop request or an interrupt: let the running jobs end
                t.join()
        except (Interrupted, KeyboardInterrupt) as e:  # a second signal: stop now; the jobs end best effort
            self.interrupted = self.interrupted or getattr(e, "signal_name", "SIGINT")
            self._stop.set()
            for t, _ in running.values():
                t.join(timeout=10)
            raise
        finally:
            self.stop()
        return self.jobs_run

    # ------------------------------------------------------------ one job
    def _workdir(self, job_id: str) -> Path:
        from faircalib.service.paths import home

        root = self.options.workdir_root or (home() / "work")
        path = Path(root) / job_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    def run_job(self, job: JobRow) -> JobState:
        """Drive one claimed job (state running, attempt = job.attempt) to a terminal state."""
        if job.id not in self.jobs_run:
            self.jobs_run.append(job.id)
        workdir = self._workdir(job.id)
        with _JobLog(workdir / "logs" / "job.log") as joblog:
            joblog.write(f"job {job.id} ({job.name}) attempt {job.attempt} on scheduler {self.id}")
            current = {"stage": None}
            last_check = {"t": 0.0, "v": False}

            def emit(kind: str, message: str, data: dict | None = None, stage: str | None = None) -> None:
                joblog.write(f"[{stage or '-'}] {kind}: {message}")
                self.store.add_event(job.id, kind, message, stage=stage, data=data)

            def should_stop() -> bool:
                if self.interrupted:
                    return True
                now = time.monotonic()
                if now - last_check["t"] >= self.options.cancel_check_s:
                    last_check.update(t=now, v=self.store.cancel_requested(job.id))
                return last_check["v"]

            def set_stage(name: str, state: str, **kw) -> None:
                self.store.set_stage(job.id, name, state, attempt=job.attempt, **kw)
                joblog.write(f"[{name}] stage: stage {name}: {state}" + (f": {kw['error']}" if kw.get("error") else ""))

            ctx = None
            try:
                config = job.config
                self.registry.validate(config)
                from faircalib.service.storage import open_storage

                root = open_storage(config.storage)
                ctx = StageContext(job=job, config=config, store=self.store, root_storage=root,
                                   storage=root.child(job.id), workdir=workdir, outputs={}, emit_fn=emit,
                                   stop_fn=should_stop, ray_address=self.options.ray_address, pool=self.pool)
                if self.options.preflight:
                    self._preflight(ctx)
                stages = self.store.ensure_stages(job.id, self.registry.plan(config))
                results: dict = dict(job.results or {})
                for st in stages:
                    if st.state == "succeeded":
                        ctx.outputs[st.name] = st.output or {}
                        emit("stage", f"stage {st.name}: already succeeded (attempt {st.attempt}); reusing its "
                                      "outputs", stage=st.name)
                        continue
                    if should_stop():
                        raise JobCancelled(f"cancelled by user before stage {st.name}")
                    spec = self.registry.specs[st.name]
                    current["stage"] = ctx.stage = st.name
                    set_stage(st.name, "running")
                    t0 = time.monotonic()
                    result = spec.run(ctx)
                    if result.artifacts:
                        self.store.add_artifacts(job.id, st.name, result.artifacts)
                    output = {**result.output, "stage_wall_s": round(time.monotonic() - t0, 3)}
                    if result.results:
                        results.update(result.results)
                        self.store.set_results(job.id, results, attempt=job.attempt)
                    set_stage(st.name, "succeeded", output=output)
                    ctx.outputs[st.name] = output
                    current["stage"] = None
                self.store.transition(job.id, JobState.RUNNING, JobState.SUCCEEDED, attempt=job.attempt,
                                      action="finish")
                joblog.write("job succeeded")
                return JobState.SUCCEEDED
            except (KeyboardInterrupt, Interrupted) as e:
                self._end_interrupted(job, current["stage"], getattr(e, "signal_name", "SIGINT"), joblog)
                raise
            except TransitionConflict as e:
                joblog.write(f"lost the job (someone else owns it now): {e}")
                log.warning("job %s: %s", job.id, e)
                return self.store.get_job(job.id).state
            except Exception as e:  # noqa: BLE001 - every failure ends the job with a reason
                if self.interrupted:  # the stop check fired because of a signal (or the stage broke off)
                    joblog.write(f"stopped after the interrupt: {type(e).__name__}: {e}")
                    return self._end_interrupted(job, current["stage"], self.interrupted, joblog)
                if isinstance(e, JobCancelled):  # the pool's PoolCancelled included
                    reason, new = f"cancelled: {e}", JobState.CANCELLED
                elif isinstance(e, FaircalibError):
                    reason, new = str(e), JobState.FAILED
                else:
                    where = f" in stage {current['stage']}" if current["stage"] else ""
                    reason, new = f"internal error{where}: {type(e).__name__}: {e}", JobState.FAILED
                    joblog.write(traceback.format_exc())
                reason = reason.strip().splitlines()[0] if reason.strip() else type(e).__name__
                joblog.write(f"job {new.value}: {reason}")
                try:
                    if current["stage"]:
                        set_stage(current["stage"], "failed", error=reason)
                    self.store.transition(job.id, JobState.RUNNING, new, attempt=job.attempt, reason=reason,
                                          action="finish")
                except TransitionConflict as conflict:
                    joblog.write(f"could not record the failure: {conflict}")
                    return self.store.get_job(job.id).state
                if ctx is not None and not isinstance(e, StorageError):
                    self._upload_log_best_effort(ctx, joblog)
                return new

    def _end_interrupted(self, job: JobRow, stage: str | None, signal_name: str, joblog: _JobLog) -> JobState:
        """The job this scheduler runs when a signal stops it: back to queued or cancelled (on_interrupt),
        recorded as the transition's event; its finished stages are kept either way."""
        where = f" in stage {stage}" if stage else ""
        try:
            if self.options.on_interrupt == "cancel":
                reason = (f"cancelled: {self.options.interrupt_origin} was interrupted by {signal_name}{where}; "
                          f"`faircalib retry {job.id}` resumes after its last finished stage")
                if stage:
                    self.store.set_stage(job.id, stage, "failed", attempt=job.attempt, error=f"interrupted by {signal_name}")
                self.store.transition(job.id, JobState.RUNNING, JobState.CANCELLED, attempt=job.attempt,
                                      reason=reason, action="cancel")
            else:
                reason = (f"requeued: {self.options.interrupt_origin} was interrupted by {signal_name}{where}; "
                          "finished stages are kept")
                self.store.requeue(job.id, attempt=job.attempt, reason=reason)
            joblog.write(f"job {reason}")
            log.warning("job %s %s", job.id, reason)
        except TransitionConflict as conflict:  # it was reconciled or cancelled meanwhile
            joblog.write(f"interrupted by {signal_name}; could not record it: {conflict}")
        return self.store.get_job(job.id).state

    def _preflight(self, ctx: StageContext) -> None:
        """Fail fast with a one-line reason: the model must resolve, the storage must take writes."""
        from faircalib.models import inspect_model

        info = inspect_model(ctx.config.model)
        ctx.emit("preflight", f"model {ctx.config.model}: {info['architecture']}, {info['layers']} layers, "
                              f"{info['parameters']:,} parameters")
        ctx.storage.check_writable()
        ctx.emit("preflight", f"storage {ctx.storage.uri} is writable")

    def _upload_log_best_effort(self, ctx: StageContext, joblog: _JobLog) -> None:
        try:
            ctx.storage.put_file(joblog.path, "logs/job.log")
        except Exception as e:  # noqa: BLE001 - the storage may be what failed
            joblog.write(f"log upload skipped: {e}")
