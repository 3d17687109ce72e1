"""Progress events: what the library's long loops report, and their one-line text form.

Every long loop takes `progress: Callable[[dict], None]` and calls it with a dict whose "event" names
the step (other keys as listed):

  probe_start     n_samples                                         faircalib.pipeline, before Stage I
  probe_batch     done, total, batch                                faircalib.probe, per rollout batch
  start           method, setting, n_blocks, n_sequences, seq_len   faircalib.calibrate, Stage II begins
  block_start     block, n_blocks, epochs
  epoch           block, n_blocks, epoch, epochs, loss, lr
  block_done      block, n_blocks, init_loss, final_loss, time_s, resumed, fallback
  fallback        block, reason
  done            wall_time_s, fallbacks                            Stage II finished
  eval_task       task, index, total                                faircalib.eval.harness, per task
  eval_requests   task, kind, done, total                           rows answered in the current task
  eval_task_done  task, index, total, wall_s
  train_step      step, total (None: a time budget), elapsed_s, budget_s, loss   faircalib.training
  transfer        direction (upload | download), key, done, total (bytes)       the service's storage

`measure(event)` reads one event as a `Measure` (which bar it moves, how far, the text beside it);
`LinePrinter` prints one line per event with elapsed time and ETA (logs, pipes, CI, notebooks). The CLI
draws rich progress bars from the same measures on a terminal (faircalib.orchestrator.progress).

Module boundary: pure Python (no rich, no click); nothing here touches tensors.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

Event = dict[str, Any]
ProgressFn = Callable[[Event], None]


@dataclass(frozen=True)
class Measure:
    key: str                  # which bar: probe, blocks, epochs, eval, requests, train, upload, download
    label: str                # the bar's name
    done: float
    total: float | None       # None: unknown (a spinner)
    unit: str = ""
    info: str = ""            # the text beside the bar (current loss, task name, ...)
    finished: bool = False    # the loop this bar follows has ended
    remove: tuple[str, ...] = field(default_factory=tuple)  # bars to drop (their loop is over)


def _g(x: Any, spec: str = ".4g") -> str:
    return "?" if x is None else format(float(x), spec)


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0
    return f"{n:.1f} TB"


def measure(e: Event) -> Measure | None:
    """The bar update an event means, or None for events that only inform (fallback, unknown ones)."""
    ev = e.get("event")
    if ev == "probe_start":
        return Measure("probe", "Stage I probe", 0, e.get("n_samples"), "prompts")
    if ev == "probe_batch":
        return Measure("probe", "Stage I probe", e["done"], e.get("total"), "prompts",
                       finished=e.get("total") is not None and e["done"] >= e["total"])
    if ev == "start":
        return Measure("blocks", f"Stage II {e.get('method', '')} {e.get('setting', '')}".rstrip(), 0,
                       e.get("n_blocks"), "blocks", f"{e.get('n_sequences')} x {e.get('seq_len')} tokens")
    if ev == "block_start":
        return Measure("epochs", f"block {e['block'] + 1}/{e.get('n_blocks', '?')}", 0, e.get("epochs"), "epochs")
    if ev == "epoch":
        return Measure("epochs", f"block {e['block'] + 1}/{e.get('n_blocks', '?')}", e["epoch"], e.get("epochs"),
                       "epochs", f"loss {_g(e.get('loss'))}",
                       finished=e.get("epochs") is not None and e["epoch"] >= e["epochs"])
    if ev == "block_done":
        how = "resumed from state" if e.get("resumed") else \
            f"loss {_g(e.get('init_loss'), '.3g')} -> {_g(e.get('final_loss'), '.3g')}"
        return Measure("blocks", "Stage II", e["block"] + 1, e.get("n_blocks"), "blocks", f"block {e['block'] + 1}: {how}",
                       finished=e.get("n_blocks") is not None and e["block"] + 1 >= e["n_blocks"])
    if ev == "done":
        return Measure("blocks", "Stage II", 1, 1, "", f"done in {_g(e.get('wall_time_s'), '.1f')} s",
                       finished=True, remove=("epochs",))
    if ev == "eval_task":
        return Measure("eval", "evaluate", e["index"], e.get("total"), "tasks", str(e.get("task", "")))
    if ev == "eval_requests":
        return Measure("requests", str(e.get("task", "requests")), e["done"], e.get("total"), "rows",
                       str(e.get("kind", "")), finished=e.get("total") is not None and e["done"] >= e["total"])
    if ev == "eval_task_done":
        return Measure("eval", "evaluate", e["index"] + 1, e.get("total"), "tasks",
                       f"{e.get('task', '')} {_g(e.get('wall_s'), '.1f')} s",
                       finished=e.get("total") is not None and e["index"] + 1 >= e["total"], remove=("requests",))
    if ev == "train_step":
        loss = f"loss {_g(e.get('loss'))}" if e.get("loss") is not None else ""
        if e.get("total"):
            return Measure("train", "train", e["step"], e["total"], "steps", loss, finished=e["step"] >= e["total"])
        return Measure("train", "train", round(float(e.get("elapsed_s", 0.0)), 1), e.get("budget_s"), "s",
                       f"step {e['step']} {loss}".strip())
    if ev == "transfer":
        direction = str(e.get("direction", "transfer"))
        total = e.get("total")
        return Measure(direction, direction, e["done"], total, "bytes", str(e.get("key", "")),
                       finished=total is not None and e["done"] >= total)
    return None


def _count(x: float, unit: str) -> str:
    if unit == "bytes":
        return human_bytes(x)
    return f"{x:g}" if isinstance(x, float) else str(x)


def _duration(s: float) -> str:
    s = max(0.0, s)
    if s < 60:
        return f"{s:.0f}s" if s >= 10 else f"{s:.1f}s"
    m, s = divmod(int(s + 0.5), 60)
    return f"{m}m{s:02d}s" if m < 60 else f"{m // 60}h{m % 60:02d}m"


def event_line(e: Event) -> str | None:
    """One line for an event without timing (None for events with nothing to say)."""
    ev = e.get("event")
    if ev == "fallback":
        return f"block {e.get('block', 0) + 1}: fallback ({e.get('reason')})"
    if ev == "probe_start":
        return f"Stage I probe: {e.get('n_samples')} prompts"
    if ev == "start":
        return (f"Stage II {e.get('method')} {e.get('setting')}: {e.get('n_blocks')} blocks on "
                f"{e.get('n_sequences')} x {e.get('seq_len')} tokens")
    if ev == "block_start":
        epochs = f" ({e['epochs']} epochs)" if e.get("epochs") else ""
        return f"block {e['block'] + 1}/{e.get('n_blocks', '?')}: calibrating{epochs}"
    if ev == "epoch":
        return (f"block {e['block'] + 1}/{e.get('n_blocks', '?')} epoch {e['epoch']}/{e.get('epochs', '?')}: "
                f"loss {_g(e.get('loss'))}")
    if ev == "block_done":
        how = "resumed from state" if e.get("resumed") else \
            f"loss {_g(e.get('init_loss'), '.4g')} -> {_g(e.get('final_loss'), '.4g')}"
        took = f" in {_g(e.get('time_s'), '.1f')} s" if e.get("time_s") is not None and not e.get("resumed") else ""
        return f"block {e['block'] + 1}/{e.get('n_blocks', '?')} done{took}: {how}"
    if ev == "done":
        return f"Stage II done in {_g(e.get('wall_time_s'), '.1f')} s"
    m = measure(e)
    if m is None:
        return str(e["message"]) if e.get("message") else None
    total = "" if m.total is None else f"/{_count(m.total, m.unit)}"
    unit = "" if m.unit in ("", "bytes") else f" {m.unit}"
    info = f" {m.info}" if m.info else ""
    return f"{m.label}: {_count(m.done, m.unit)}{total}{unit}{info}"


LINE_EVERY_S = {"eval_requests": 5.0, "train_step": 10.0, "transfer": 1.0}  # event -> min seconds between lines


class LinePrinter:
    """A progress callback printing one line per event: '<what>: done/total unit info [elapsed, ETA]'.

    Frequent events (request rows, training steps, transfer chunks) print at most every `every[event]`
    seconds, and always when their loop finishes."""

    def __init__(self, stream: TextIO | None = None, *, every: dict[str, float] | None = None,
                 prefix: str = "", clock: Callable[[], float] = time.monotonic):
        self.stream = stream
        self.every = dict(LINE_EVERY_S if every is None else every)
        self.prefix = prefix
        self.clock = clock
        self._start: dict[str, tuple[float, float]] = {}  # bar key -> (time, done) when its loop started
        self._done: dict[str, float] = {}  # bar key -> last done
        self._last: dict[str, float] = {}

    def _timing(self, m: Measure) -> str:
        now = self.clock()
        if m.key not in self._start or m.done < self._done.get(m.key, 0.0):  # a new loop (next block's epochs)
            self._start[m.key] = (now, m.done)
        self._done[m.key] = m.done
        t0, d0 = self._start[m.key]
        if m.done == d0 or m.total == 1 and m.finished and m.unit == "":
            return ""
        elapsed = now - t0
        out = f"{_duration(elapsed)}"
        if m.total and m.done > d0 and not m.finished and elapsed > 0:
            rate = (m.done - d0) / elapsed
            out += f", eta {_duration((m.total - m.done) / rate)}"
        return f" [{out}]"

    def __call__(self, e: Event) -> None:
        line = event_line(e)
        if line is None:
            return
        m = measure(e)
        ev = str(e.get("event"))
        timing = ""
        if m is not None:
            interval = self.every.get(ev, 0.0)
            now = self.clock()
            if interval and not m.finished and now - self._last.get(ev, -1e18) < interval:
                self._timing(m)  # keep the ETA's reference point
                return
            self._last[ev] = now
            timing = self._timing(m)
            for k in m.remove:
                self._start.pop(k, None)
                self._done.pop(k, None)
        stream = self.stream or sys.stderr
        stream.write(f"{self.prefix}{line}{timing}\n")
        stream.flush()


def combine(*fns: ProgressFn | None) -> ProgressFn:
    """One callback calling each given one in turn (None entries skipped)."""
    live = [f for f in fns if f is not None]

    def call(e: Event) -> None:
        for f in live:
            f(e)

    return call


__all__ = ["Event", "LinePrinter", "Measure", "ProgressFn", "combine", "event_line", "human_bytes", "measure"]
