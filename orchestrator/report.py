"""A job's evaluation results as a side-by-side table: one row per (task, metric), FP next to the
quantized model, the difference, and each task's wall time per model. Used by `faircalib results`,
`faircalib quickstart` (rich table) and the job's `evaluate/report.md` (Markdown). A sweep's jobs as
one comparison (`sweep_comparison`): a row per job (model x method x bits x probe setting), a column
per metric and its Δ vs FP (`faircalib results --sweep`).

Boundary: formatting only; the numbers come from the job's results (orchestrator.stages.run_evaluate).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

VARIANTS = ("fp", "quantized")
_NOT_METRICS = {"wall_s", "model_s", "n_samples", "masked_tokens"}


@dataclass(frozen=True)
class Row:
    task: str
    metric: str
    values: dict[str, float | None]        # variant -> value
    stderr: dict[str, float | None]        # variant -> stderr (lm-eval), else None
    wall_s: dict[str, float | None]        # variant -> the task's wall time (first row of a task only)
    n: int | None = None                   # examples (lm-eval tasks)
    group: bool = False

    @property
    def delta(self) -> float | None:
        fp, q = self.values.get("fp"), self.values.get("quantized")
        return None if fp is None or q is None else q - fp


def _task_order(metrics: dict) -> list[str]:
    groups = sorted((t for t, m in metrics.items() if isinstance(m, dict) and "group_of" in m),
                    key=lambda g: (len(metrics[g]["group_of"]), g))  # subgroups before the suite
    leaves = sorted(t for t in metrics if t != "fidelity" and t not in groups)
    return (["fidelity"] if "fidelity" in metrics else []) + leaves + groups


def rows(results: dict | None) -> list[Row]:
    """Table rows from a job's results ({"metrics": {task: {variant: {metric: value}}}})."""
    metrics = (results or {}).get("metrics") or {}
    out: list[Row] = []
    for task in _task_order(metrics):
        entry = metrics[task]
        variants = [v for v in VARIANTS if isinstance(entry.get(v), dict)]
        names: list[str] = []
        for v in variants:
            for k, val in entry[v].items():
                if (k in _NOT_METRICS or k.endswith("_stderr") or isinstance(val, bool)
                        or not isinstance(val, (int, float, type(None))) or k in names):
                    continue
                names.append(k)
        for i, name in enumerate(names):
            out.append(Row(task=task, metric=name,
                           values={v: entry[v].get(name) for v in variants},
                           stderr={v: entry[v].get(f"{name}_stderr") for v in variants},
                           wall_s={v: entry[v].get("wall_s") for v in variants} if i == 0 else {},
                           n=next((entry[v].get("n_samples") for v in variants if entry[v].get("n_samples")), None),
                           group="group_of" in entry))
    return out


def fmt(v: Any, stderr: Any = None) -> str:
    if v is None:
        return "-"
    if not isinstance(v, (int, float)):
        return str(v)
    s = f"{v:.4f}" if abs(v) < 100 else f"{v:.1f}"
    if isinstance(stderr, (int, float)) and not math.isnan(stderr):
        s += f" ±{stderr:.3f}" if abs(stderr) < 100 else f" ±{stderr:.1f}"
    return s


def fmt_delta(d: float | None) -> str:
    return "" if d is None else (f"{d:+.4f}" if abs(d) < 100 else f"{d:+.1f}")


def fmt_wall(wall: dict) -> str:
    return " / ".join("-" if wall.get(v) is None else f"{wall[v]:.1f}" for v in VARIANTS if v in wall)


def column_titles(method: str, bits: str) -> dict[str, str]:
    return {"fp": "FP", "quantized": f"{bits.upper()} ({method})"}


def results_markdown(summary: dict) -> str:
    """evaluate/report.md: the table plus the settings that produced it."""
    titles = column_titles(summary.get("method", "?"), summary.get("bits", "?"))
    table = rows({"metrics": summary.get("metrics")})
    quant = summary.get("method") != "fp"
    wall_title = "wall s (FP / quantized)" if quant else "wall s"
    cols = ["task", "metric", "FP"] + ([titles["quantized"], "Δ"] if quant else []) + ["n", wall_title]
    lines = [f"# {summary.get('name') or summary.get('job')}: evaluation", "",
             (f"job `{summary.get('job')}` · model `{summary.get('model')}` · method `{summary.get('method')}` · "
              f"bits `{summary.get('bits')}` · evaluation wall time {summary.get('wall_s', 0):.1f} s"), "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in table:
        cells = [f"[{r.task}]" if r.group else r.task, r.metric, fmt(r.values.get("fp"), r.stderr.get("fp"))]
        if quant:
            cells += [fmt(r.values.get("quantized"), r.stderr.get("quantized")), fmt_delta(r.delta)]
        cells += ["" if r.n is None else str(r.n), fmt_wall(r.wall_s)]
        lines.append("| " + " | ".join(cells) + " |")
    s = summary.get("settings") or {}  # the job's EvalConfig as a dict
    lines += [""]
    if "fidelity" in (s.get("tasks") or ()):
        lines.append(f"fidelity: masked-token NLL / KL to FP / top-1 agreement on {s.get('n')} x "
                     f"{s.get('seq_len')} tokens of `{s.get('data')}` (seed {s.get('seed')}).")
    if summary.get("lm_eval"):
        lines.append(f"lm-eval: limit {s.get('limit')}, mc_num {s.get('mc_num')}, greedy check "
                     f"{s.get('check_greedy')}, seed {s.get('seed')}.")
        for unit, per in (summary.get("lm_eval") or {}).items():
            res = per.get("fp") or {}
            lines.append(f"- `{unit}`: decoding {res.get('decoding')}, versions {res.get('versions')}")
    lines.append("Groups (in brackets) are unweighted means of their tasks' main metric; wall time is the whole "
                 "lm-eval call per model (a group's is the sum of its tasks').")
    return "\n".join(lines) + "\n"


def sweep_comparison(jobs: list) -> dict[str, Any]:
    """A sweep's jobs (store.JobRow) -> {"metrics": ["task/metric", ...], "rows": [{job, name, state,
    model, method, bits, probe, calibration, values: {"task/metric": {"value", "fp", "delta"}}}]}; rows
    sorted by model, method, bits, probe setting. value is the quantized model's (the FP one for fp
    jobs), delta = value - FP of the same job's evaluation (None for fp jobs)."""
    order: list[str] = []
    out_rows = []
    for job in sorted(jobs, key=lambda j: (j.model, j.method, j.bits, j.labels.get("probe", ""), j.name)):
        values: dict[str, dict] = {}
        for r in rows(job.results):
            col = f"{r.task}/{r.metric}"
            if col not in order:
                order.append(col)
            value = r.values.get("quantized", r.values.get("fp")) if job.method != "fp" else r.values.get("fp")
            values[col] = {"value": value, "fp": r.values.get("fp"),
                           "delta": r.delta if job.method != "fp" else None}
        out_rows.append({"job": job.id, "name": job.name, "state": job.state.value, "model": job.model,
                         "method": job.method, "bits": job.bits if job.method != "fp" else "-",
                         "probe": job.labels.get("probe", "-"), "calibration": job.labels.get("calibration", "-"),
                         "values": values})
    return {"metrics": order, "rows": out_rows}
