"""Running lm-eval on faircalib models: loading any SOURCE, resolving task names (the shipped offline suite
or lm-eval's own registry), timing each task, and shaping one JSON-able result.

    from faircalib.eval.harness import evaluate_source, run_lm_eval
    res = evaluate_source("zoo:tiny-llada", ["faircalib_suite"], limit=20, mc_num=32)
    res = run_lm_eval(model, tokenizer, ["faircalib_arith", "piqa"], decoding={"gen_length": 16, "steps": 16})

Result: {"tasks": {task: {"metrics", "n_samples", "wall_s", "output_type"?}}, "groups": {group: {"metrics",
"tasks", "wall_s"}}, "settings", "decoding", "model", "versions", "wall_s"}. Each of the suite's leaf
tasks runs in its own `simple_evaluate` call, so its wall time is its own (`wall_s`: the whole call,
lm-eval's task building and bookkeeping included; `model_s`: the part spent answering requests;
`cpu_s`: CPU time of this process over the call, all threads - stable when the machine is shared); a
standard lm-eval name runs as one call (groups such as mmlu keep lm-eval's aggregation; the time is
the group's). Suite group scores are the unweighted mean of the leaves' main metric (exact_match / acc).

Module boundary: orchestration of lm-eval; request answering lives in faircalib.eval.lm, loading in
faircalib.eval.loading, the settings in faircalib.eval.settings.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from faircalib.errors import ConfigError, DataError, ModelLoadError
from faircalib.eval.lm import FaircalibLM
from faircalib.eval.loading import load_for_eval
from faircalib.eval.settings import LMEvalSettings
from faircalib.eval.suite import GROUP_METRIC, GROUPS, LEAF_TASKS, OWN_NAMES, SUITE_GROUP, TASKS_DIR
from faircalib.models.defaults import model_decoding

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------ tasks
def parse_tasks(tasks: str | Sequence[str]) -> list[str]:
    names = [t.strip() for t in (tasks.split(",") if isinstance(tasks, str) else tasks) if t and t.strip()]
    if not names:
        raise ConfigError("no tasks given; e.g. --tasks faircalib_suite or --tasks faircalib_arith,piqa")
    return list(dict.fromkeys(names))


def task_manager(tasks: Sequence[str]):
    """lm-eval TaskManager over the shipped suite; lm-eval's own registry is indexed only when a requested
    name is not ours (indexing it takes seconds)."""
    from lm_eval.tasks import TaskManager

    need_defaults = any(t not in OWN_NAMES for t in tasks)
    tm = TaskManager(include_path=str(TASKS_DIR), include_defaults=need_defaults)
    unknown = [t for t in tasks if t not in tm.all_tasks and t not in OWN_NAMES]
    if unknown:
        raise ConfigError(f"unknown lm-eval task(s) {unknown}; the offline suite has "
                          f"{', '.join(sorted(OWN_NAMES))}; other names must be in lm-eval's registry")
    return tm


def expand(tasks: Sequence[str]) -> list[str]:
    """Run units: suite groups become their leaf tasks; other names stay as they are."""
    out: list[str] = []
    for t in tasks:
        out += list(GROUPS[t]) if t in GROUPS else [t]
    return list(dict.fromkeys(out))


def _clean_metrics(entry: dict) -> dict:
    out = {}
    for k, v in entry.items():
        if k in ("alias", "name", "sample_len", "samples") or not isinstance(v, (int, float)):
            continue
        key = k.removesuffix(",none")
        if isinstance(v, float) and not math.isfinite(v):
            v = None
        out[key] = v
    return out


# ------------------------------------------------------------------------ running
def run_lm_eval(model: Any, tokenizer: Any, tasks: str | Sequence[str], *, limit: float | None = None,
                mc_num: int = 128, batch_size: int = 32, gen_batch_size: int = 16, decoding: dict | None = None,
                seed: int = 0, check_greedy: bool = True, exact_when_cheap: bool = True,
                bootstrap_iters: int = 1000, source: str | None = None, log_samples: bool = False,
                progress: bool = True, report=None, tasks_manager=None) -> dict:
    """Evaluate an in-memory dLLM (FP or quantized) with lm-eval on `tasks` (names or a comma list).

    decoding: DecodeConfig fields for generate_until (unset ones: the model's default policy and
    DecodeConfig's defaults; `evaluate_source` fills them from the model card). report: optional
    progress callback (faircalib.progress events eval_task / eval_requests / eval_task_done, each also
    with a "message" line; the job service's eval actors pass theirs). progress: lm-eval-style tqdm bars.
    tasks_manager: a TaskManager from `task_manager(names)` (built here when None).
    """
    import lm_eval
    from lm_eval import simple_evaluate

    names = parse_tasks(tasks)
    settings = LMEvalSettings(mc_num=mc_num, batch_size=batch_size, gen_batch_size=gen_batch_size, seed=seed,
                              check_greedy=check_greedy, exact_when_cheap=exact_when_cheap,
                              decoding=dict(decoding or {}))
    lm = FaircalibLM(model=model, tokenizer=tokenizer, settings=settings)
    lm.source, lm.progress = source, progress
    tm = tasks_manager or task_manager(names)
    t_all = time.perf_counter()
    out: dict[str, Any] = {"source": source, "tasks": {}, "groups": {}, "samples": {} if log_samples else None}
    units = expand(names)
    lm.report = None if report is None else (
        lambda e: report({**e, "task": lm.current_task, "message": f"{lm.current_task}: {e['message']}"}))
    for index, unit in enumerate(units):
        lm.current_task = unit
        if report is not None:
            report({"event": "eval_task", "task": unit, "index": index, "total": len(units),
                    "message": f"lm-eval {unit}"})
        t0, m0, c0 = time.perf_counter(), lm.model_seconds, time.process_time()
        try:
            res = simple_evaluate(model=lm, tasks=[unit], task_manager=tm, limit=limit,
                                  bootstrap_iters=bootstrap_iters, log_samples=log_samples, random_seed=seed,
                                  numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed)
        except OSError as e:  # ConnectionError / FileNotFoundError: a standard task's dataset is not reachable
            if unit in OWN_NAMES:
                raise
            raise DataError(f"lm-eval task {unit!r} could not load its dataset ({type(e).__name__}: {e}); standard "
                            f"tasks need network access or a populated Hugging Face datasets cache "
                            f"(the offline suite is faircalib_suite)") from e
        wall, model_s, cpu_s = time.perf_counter() - t0, lm.model_seconds - m0, time.process_time() - c0
        n_samples = res.get("n-samples", {})
        group_names = set(res.get("group_subtasks") or {}) | set(res.get("groups") or {})
        leaves = [t for t in res["results"] if t not in group_names]
        for t in leaves:
            entry = {"metrics": _clean_metrics(res["results"][t]),
                     "n_samples": (n_samples.get(t) or {}).get("effective")}
            if len(leaves) == 1:
                entry["wall_s"], entry["model_s"], entry["cpu_s"] = round(wall, 3), round(model_s, 3), round(cpu_s, 3)
            out["tasks"][t] = entry
            if log_samples:
                out["samples"][t] = res.get("samples", {}).get(t)
        for g, entry in (res.get("groups") or {}).items():
            out["groups"][g] = {"metrics": _clean_metrics(entry), "tasks": None, "wall_s": round(wall, 3),
                                "model_s": round(model_s, 3)}
        if report is not None:
            report({"event": "eval_task_done", "task": unit, "index": index, "total": len(units),
                    "wall_s": round(wall, 3), "message": f"lm-eval {unit}: {wall:.1f}s"})
    out["groups"].update(_suite_groups(names, out["tasks"]))
    out["wall_s"] = round(time.perf_counter() - t_all, 3)
    out["settings"] = {**settings.to_dict(), "limit": limit, "bootstrap_iters": bootstrap_iters,
                       "max_length": lm.max_length, "rolling_context": lm.rolling_context}
    out["decoding"] = lm.get_model_info()["faircalib_decoding"]
    out["model"] = _model_info(model)
    out["versions"] = _versions(lm_eval)
    out["device"] = str(lm.device)
    out["threads"] = torch.get_num_threads()
    if not log_samples:
        out.pop("samples")
    return out


def _mean(tasks: dict, leaves: Sequence[str], metric: str) -> float | None:
    vals = [tasks[t]["metrics"].get(metric) for t in leaves]
    return None if None in vals else sum(vals) / len(vals)


def _suite_groups(names: Sequence[str], tasks: dict) -> dict:
    """Scores of the requested suite groups (and the suite's subgroups) from their leaves' results."""
    wanted = [n for n in names if n in GROUPS]
    if SUITE_GROUP in wanted:
        wanted += [g for g in GROUP_METRIC if g not in wanted]
    out = {}
    for g in wanted:
        leaves = GROUPS[g]
        if not all(t in tasks for t in leaves):
            continue
        if g in GROUP_METRIC:
            metrics = {GROUP_METRIC[g]: _mean(tasks, leaves, GROUP_METRIC[g])}
        else:
            metrics = {f"{m} ({sub})": _mean(tasks, GROUPS[sub], m) for sub, m in GROUP_METRIC.items()}
        out[g] = {"metrics": metrics, "tasks": list(leaves),
                  "wall_s": round(sum(tasks[t].get("wall_s") or 0.0 for t in leaves), 3),
                  "model_s": round(sum(tasks[t].get("model_s") or 0.0 for t in leaves), 3)}
    return out


def _model_info(model: Any) -> dict:
    cfg = model.config
    info: dict[str, Any] = {"arch": cfg.arch, "parameters": sum(p.numel() for p in model.parameters()),
                            "quantized": None}
    q = getattr(model, "faircalib_quant", None)
    if q is not None:
        qc = q.get("quant_config", {})
        info["quantized"] = {k: qc.get(k) for k in ("method", "w_bits", "a_bits")}
    return info


def _versions(lm_eval) -> dict:
    import faircalib

    return {"faircalib": faircalib.__version__, "lm_eval": lm_eval.__version__, "torch": torch.__version__}


def evaluate_source(source: str | Path, tasks: str | Sequence[str], *, device: str = "auto",
                    dtype: str | None = None, decoding: dict | None = None, **kwargs: Any) -> dict:
    """Load SOURCE (model dir, zoo:NAME or quantized checkpoint dir) and `run_lm_eval` on it. Decoding
    defaults come from the model card (zoo models, or a checkpoint whose meta names its zoo source), else
    the model family's documented defaults (faircalib.models.model_decoding), overridden by `decoding`."""
    names = parse_tasks(tasks)
    tm = task_manager(names)  # validate the names before loading the model
    t0 = time.perf_counter()
    loaded = load_for_eval(source, device=device, dtype=dtype)
    if loaded.tokenizer is None:
        raise ModelLoadError(f"{source}: no tokenizer in the model directory; lm-eval needs one")
    load_s = time.perf_counter() - t0
    dec = {**model_decoding(str(source), loaded.path).values, **(decoding or {})}
    res = run_lm_eval(loaded.model, loaded.tokenizer, names, decoding=dec, source=str(source), tasks_manager=tm,
                      **kwargs)
    res["load_s"] = round(load_s, 3)
    return res


def result_rows(res: dict) -> list[dict]:
    """Flatten a result into table rows: task, metric, value, stderr, n, wall_s (groups last)."""
    rows = []
    for kind, entries in (("task", res["tasks"]), ("group", res["groups"])):
        for name, e in entries.items():
            metrics = e.get("metrics") or {}
            for m, v in metrics.items():
                if m.endswith("_stderr") or "_stderr," in m:
                    continue
                rows.append({"kind": kind, "task": name, "metric": m, "value": v,
                             "stderr": metrics.get(f"{m}_stderr"), "n": e.get("n_samples"),
                             "wall_s": e.get("wall_s")})
    return rows


def format_table(res: dict) -> str:
    lines = [f"{'task':<24} {'metric':<28} {'value':>10} {'± stderr':>10} {'n':>6} {'wall s':>8}"]
    for r in result_rows(res):
        v = "-" if r["value"] is None else f"{r['value']:.4f}"
        se = "" if not isinstance(r["stderr"], (int, float)) else f"{r['stderr']:.4f}"
        n = "" if r["n"] is None else str(r["n"])
        w = "" if r["wall_s"] is None else f"{r['wall_s']:.1f}"
        name = r["task"] if r["kind"] == "task" else f"[{r['task']}]"
        lines.append(f"{name:<24} {r['metric']:<28} {v:>10} {se:>10} {n:>6} {w:>8}")
    return "\n".join(lines)


__all__ = [
    "LEAF_TASKS",
    "evaluate_source",
    "expand",
    "format_table",
    "parse_tasks",
    "result_rows",
    "run_lm_eval",
    "task_manager",
]
