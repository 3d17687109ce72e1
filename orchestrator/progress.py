"""Rendering progress for the CLI: the library's progress events (faircalib.progress) as rich bars with
ETA on a terminal, one line per event otherwise (logs, pipes, CI), nothing with --quiet; and the same
for jobs, from their events in the job store (`faircalib run`, `submit --wait / --run`).

    with ProgressView(quiet=quiet) as view:          # stderr; bars only when it is a terminal
        view.note("probe: T=16 L=16 (model card of zoo:tiny-llada)")
        run_method(..., progress=view)                # library events -> bars

    watcher = JobWatcher(store, view, jobs=lambda: [job_id])   # store events -> one bar per running stage
    watcher.poll()                                    # or watcher.start() / watcher.stop() (a thread)
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import click

from faircalib.progress import LinePrinter, Measure, event_line, human_bytes, measure

log = logging.getLogger(__name__)
quiet_option = click.option("--quiet", "-q", is_flag=True,
                            help="No progress output (bars on a terminal, event lines otherwise).")


def _columns():
    from rich.progress import (
        BarColumn,
        ProgressColumn,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )
    from rich.text import Text

    class CountColumn(ProgressColumn):
        """done/total in the bar's unit (bytes human-readable)."""

        def render(self, task) -> Text:
            unit = task.fields.get("unit", "")
            if unit == "bytes":
                total = "?" if task.total is None else human_bytes(task.total)
                return Text(f"{human_bytes(task.completed)}/{total}", style="progress.download")
            done = f"{task.completed:g}"
            total = "?" if task.total is None else f"{task.total:g}"
            return Text(f"{done}/{total} {unit}".rstrip(), style="progress.download")

    class EtaColumn(ProgressColumn):
        """Time left at the average rate so far (rich's own estimate needs several recent samples,
        which slow loops such as one calibration block per minute do not give)."""

        def render(self, task) -> Text:
            if task.finished or not task.total or not task.completed or task.elapsed is None:
                return Text("eta -" if not task.finished else "", style="progress.remaining")
            t1, d1 = task.fields.get("t1"), task.fields.get("d1")  # the first progress seen (set by update)
            if t1 is not None and task.completed > d1 and time.monotonic() > t1:
                left = (time.monotonic() - t1) * (task.total - task.completed) / (task.completed - d1)
            else:  # from the start: includes set-up time (model load, actor start)
                left = task.elapsed * (task.total - task.completed) / task.completed
            m, sec = divmod(int(left + 0.5), 60)
            return Text(f"eta {m // 60}:{m % 60:02d}:{sec:02d}" if m >= 60 else f"eta {m}:{sec:02d}",
                        style="progress.remaining")

    return (SpinnerColumn(), TextColumn("[progress.description]{task.description}"), BarColumn(bar_width=28),
            CountColumn(), TimeElapsedColumn(), EtaColumn(), TextColumn("{task.fields[info]}", markup=False))


def stderr_console():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


class ProgressView:
    """A progress callback: bars (keyed by Measure.key, or any key via `update`) on a terminal console,
    one line per event elsewhere, nothing when quiet. Use as a context manager (stops the bars)."""

    def __init__(self, *, quiet: bool = False, console: Any = None, lines: LinePrinter | None = None):
        self.quiet = quiet
        self.console = console if console is not None else stderr_console()
        self.live = not quiet and bool(self.console.is_terminal)
        self.lines = lines or LinePrinter(stream=self.console.file)
        self._progress = None
        self._tasks: dict[Any, Any] = {}
        self._lock = threading.RLock()

    # ------------------------------------------------------------ lifecycle
    def __enter__(self) -> ProgressView:  # noqa: PYI034
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            if self._progress is not None:
                self._progress.stop()
                self._progress = None
                self._tasks.clear()

    def _bars(self):
        if self._progress is None:
            from rich.progress import Progress

            self._progress = Progress(*_columns(), console=self.console, refresh_per_second=8)
            self._progress.start()
        return self._progress

    # ------------------------------------------------------------ output
    def note(self, text: str) -> None:
        """A line of its own (above the bars on a terminal); silent when quiet."""
        if self.quiet:
            return
        with self._lock:
            if self.live:
                (self._progress.console if self._progress else self.console).print(text, markup=False,
                                                                                  highlight=False, soft_wrap=True)
            else:
                self.console.file.write(text + "\n")
                self.console.file.flush()

    def update(self, key: Any, m: Measure, label: str | None = None) -> None:
        """Create or move bar `key` to measure `m` (a finished measure completes it; m.remove drops bars)."""
        if not self.live:
            return
        with self._lock:
            bars = self._bars()
            desc = label or m.label
            total = m.total if m.total else None
            task = self._tasks.get(key)
            if task is None:
                task = self._tasks[key] = bars.add_task(desc, total=total, completed=m.done, unit=m.unit, info=m.info)
            elif m.done < bars.tasks[self._index(task)].completed:  # a new loop on the same bar (next block)
                bars.reset(task, total=total, completed=m.done, description=desc, unit=m.unit, info=m.info)
                bars.tasks[self._index(task)].fields.pop("t1", None)
            else:  # same loop: keep the bar's name (a block_done event does not repeat the method)
                bars.update(task, total=total, completed=m.done, unit=m.unit, info=m.info,
                            **({"description": label} if label else {}))
            t = bars.tasks[self._index(task)]
            if t.completed > 0 and "t1" not in t.fields:  # ETA from the first real progress on
                t.fields.update(t1=time.monotonic(), d1=t.completed)
            if m.finished:
                bars.update(task, total=total or max(m.done, 1), completed=total or max(m.done, 1))
            for k in m.remove:
                self.remove(k)

    def _index(self, task_id) -> int:
        return next(i for i, t in enumerate(self._progress.tasks) if t.id == task_id)

    def remove(self, key: Any) -> None:
        with self._lock:
            task = self._tasks.pop(key, None)
            if task is not None and self._progress is not None:
                self._progress.remove_task(task)

    def remove_prefix(self, prefix: tuple) -> None:
        """Drop every bar whose (tuple) key starts with `prefix`."""
        with self._lock:
            for k in [k for k in self._tasks if isinstance(k, tuple) and k[:len(prefix)] == prefix]:
                self.remove(k)

    def __call__(self, event: dict) -> None:
        """A library progress event (faircalib.progress)."""
        if self.quiet:
            return
        if not self.live:
            self.lines(event)
            return
        m = measure(event)
        if m is None:
            line = event_line(event)
            if line:
                self.note(line)
            return
        if event.get("event") in ("block_done", "fallback", "eval_task_done"):
            line = event_line(event)
            if line:
                self.note(line)
        self.update(m.key, m)


# ---------------------------------------------------------------- jobs (events from the store)
_CALIB = ("start", "block_start", "epoch", "block_done", "done")
_MILESTONES = ("block_done", "fallback", "eval_task_done")


class _StageBar:
    """Progress of one running stage of one job, folded from its events."""

    def __init__(self) -> None:
        self.parts: dict[Any, float] = {}
        self.total: float | None = None
        self.done: float = 0.0
        self.unit = ""
        self.info = ""
        self.n_blocks: int | None = None
        self.blocks_done = 0
        self.fine = False  # a finer measure than shards drives this bar (probe rows, blocks, bytes)

    def feed(self, kind: str, data: dict, message: str) -> bool:
        """Fold one event in; True when the bar moved."""
        ev = data.get("event")
        if ev == "probe_batch" and "part" in data:
            self.parts[data["part"]] = float(data.get("done", 0))
            self.done, self.total, self.unit, self.fine = sum(self.parts.values()), data.get("total"), "prompts", True
        elif ev in _CALIB:
            self.fine, self.unit = True, "blocks"
            self.n_blocks = data.get("n_blocks", self.n_blocks)
            self.total = self.n_blocks
            if ev == "block_done":
                self.blocks_done = int(data["block"]) + 1
                self.done = float(self.blocks_done)
            elif ev == "epoch" and data.get("epochs"):
                self.done = int(data["block"]) + float(data["epoch"]) / float(data["epochs"])
            elif ev == "done" and self.n_blocks:
                self.done = float(self.n_blocks)
        elif ev == "transfer" and self.unit in ("", "bytes"):  # the upload stage (elsewhere: beside the bar)
            self.done, self.total, self.unit, self.fine = float(data["done"]), data.get("total"), "bytes", True
        elif kind == "shard_done" and data.get("total"):
            if not self.fine:  # probe rows / blocks are finer than shards: keep those
                self.done, self.total, self.unit = float(data["done"]), data["total"], "shards"
        elif ev in ("eval_task", "eval_requests"):  # the current task's rows: beside the bar, no line
            m = measure(data)
            self.info = (message or (f"{m.label} {m.info} {m.done:g}/{m.total:g}" if m and m.total else ""))[:70]
            return True
        else:
            if message and kind in ("progress", "shard_done"):
                self.info = message[:70]
            return False
        if message:
            self.info = message[:70]
        return True


class JobWatcher:
    """Renders the events of the jobs `jobs()` names, as they arrive in the store: on a terminal one
    bar per running stage (rows probed, blocks/epochs calibrated, evaluation shards, bytes uploaded)
    plus a line for each state change and milestone; otherwise one line per event (what `faircalib
    logs` prints). `poll()` renders what is new; `start()` does it on a thread every poll_s."""

    def __init__(self, store, view: ProgressView, jobs: Callable[[], Iterable[str]] | None, *, poll_s: float = 0.5,
                 printer: Callable[[Any], None] | None = None, keep_finished: bool = True):
        self.store, self.view, self.jobs, self.poll_s = store, view, jobs, poll_s
        self.keep_finished = keep_finished  # False (a long-running `faircalib run`): drop a job's bars when it ends
        self.printer = printer  # how an event line is printed (default: "HH:MM:SS JOB [stage] message")
        self.last_id: dict[str, int] = {}
        self.finished: set[str] = set()
        self._stages: dict[tuple[str, str], _StageBar] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _line(self, e) -> str:
        stage = f"[{e.stage}] " if e.stage else ""
        ts = e.ts.strftime("%H:%M:%S") if e.ts else "-"
        return f"{ts} {e.job_id[:8]} {stage}{e.message}"

    def _print(self, e) -> None:
        if self.printer is not None:
            self.printer(e)  # prints on the view's console: above the bars when they are live
        else:
            self.view.note(self._line(e))

    def _render(self, e) -> None:
        v = self.view
        if v.quiet:
            return
        data = e.data or {}
        if not v.live:
            self._print(e)
            return
        stage = e.stage or "-"
        key = (e.job_id, stage)
        if e.kind == "stage":
            state = e.message.split(":", 2)[1].strip() if e.message.count(":") else ""
            if state == "running":
                self._stages[key] = _StageBar()
                v.update(key, Measure("stage", stage, 0, None, info="starting"), label=f"{e.job_id[:8]} {stage}")
            elif state in ("succeeded", "failed"):
                bar = self._stages.pop(key, None)
                if bar is not None and state == "succeeded":
                    total = bar.total or max(bar.done, 1)
                    v.update(key, Measure("stage", stage, total, total, bar.unit, "done", finished=True),
                             label=f"{e.job_id[:8]} {stage}")
            self._print(e)
            return
        bar = self._stages.get(key)
        if bar is None and e.stage and e.kind in ("progress", "shard_done", "transfer"):
            bar = self._stages[key] = _StageBar()
        absorbed = bar.feed(e.kind, data, e.message) if bar is not None else False
        if bar is not None:
            v.update(key, Measure("stage", stage, bar.done, bar.total, bar.unit, bar.info),
                     label=f"{e.job_id[:8]} {stage}")
        if not absorbed or data.get("event") in _MILESTONES:
            self._print(e)

    def poll(self) -> None:
        for job_id in list(self.jobs()):
            if job_id in self.finished:
                continue
            events = self.store.events(job_id, after_id=self.last_id.get(job_id, 0))
            for e in events:
                self._render(e)
                self.last_id[job_id] = e.id
            job = self.store.get_job(job_id)
            if job.state.is_terminal():
                self.finished.add(job_id)
                if not self.keep_finished:
                    self.view.remove_prefix((job_id,))
                for k in [k for k in self._stages if k[0] == job_id]:
                    self._stages.pop(k)

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.poll()
            except Exception as e:  # noqa: BLE001 - progress must never break the scheduler
                self.view.note(f"(progress display: {type(e).__name__}: {e})")

    def start(self) -> JobWatcher:
        if not self.view.quiet:
            self._thread = threading.Thread(target=self._loop, daemon=True, name="job-progress")
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self.poll()  # whatever arrived last
        except Exception as e:  # noqa: BLE001 - the store may be gone at shutdown
            log.debug("last progress poll failed: %s", e)


__all__ = ["JobWatcher", "ProgressView", "quiet_option", "stderr_console"]
