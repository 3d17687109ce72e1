"""Result shaping: the eval actors' raw results -> the job's metrics table, and the evaluate stage's
results.json summary. No computation of metrics (the library's) and no I/O (the stage bodies').
"""
from __future__ import annotations

from typing import Any

VARIANTS = ("fp", "quantized")


def shape_eval_results(parts: dict[str, dict]) -> tuple[dict, dict]:
    """Eval actors' {task: {variant: result}} -> (metrics, lm_eval).

    metrics: {task: {variant: {metric: value, ..., "wall_s"}}} for `fidelity` (as the library returns
    it, plus wall_s) and for every lm-eval leaf task and group (lm-eval's metric names without the
    ",none" filter suffix, stderr included, n_samples, wall_s: that task's whole simple_evaluate call);
    group entries also carry "group_of": [leaf tasks]. lm_eval: {unit: {variant: the whole
    run_lm_eval result}} (settings, decoding, versions) for the report."""
    from faircalib.eval.settings import BUILTIN_TASKS

    metrics: dict[str, dict] = {}
    full: dict[str, dict] = {}
    for unit, out in parts.items():
        if unit in BUILTIN_TASKS:
            metrics[unit] = out
            continue
        full[unit] = out
        for variant in VARIANTS:
            res = out.get(variant)
            if res is None:
                continue
            for task, entry in res.get("tasks", {}).items():
                row = dict(entry.get("metrics") or {})
                row.update({k: entry[k] for k in ("n_samples", "wall_s") if entry.get(k) is not None})
                metrics.setdefault(task, {})[variant] = row
            for group, entry in res.get("groups", {}).items():
                row = dict(entry.get("metrics") or {})
                if entry.get("wall_s") is not None:
                    row["wall_s"] = entry["wall_s"]
                metrics.setdefault(group, {})[variant] = row
                if entry.get("tasks"):
                    metrics[group]["group_of"] = list(entry["tasks"])
    return metrics, full


def evaluation_summary(job_id: str, job_name: str, config, parts: dict[str, dict], wall_s: float) -> dict[str, Any]:
    """The evaluate stage's results.json: job identity, metrics, the full lm-eval results and the
    evaluation settings (the library's EvalConfig as a dict)."""
    metrics, lm_full = shape_eval_results(parts)
    return {"job": job_id, "name": job_name, "model": config.model, "method": config.method, "bits": config.bits,
            "tasks": list(config.evaluation.tasks), "metrics": metrics, "lm_eval": lm_full, "wall_s": wall_s,
            "settings": config.evaluation.to_dict()}
