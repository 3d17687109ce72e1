"""Shaping eval actors' results into the job's metrics (per task and group, per model, wall time) and the
side-by-side FP vs quantized table / report.md, on results shaped like faircalib.eval.harness's."""
from __future__ import annotations

import pytest
from faircalib.orchestrator.report import results_markdown, rows
from faircalib.orchestrator.results import shape_eval_results

from faircalib.eval.settings import EvalConfig


def _lm(acc: float, em: float, wall: float) -> dict:
    """A run_lm_eval result for the group faircalib_mc (2 leaves) - abbreviated."""
    return {"tasks": {"faircalib_tasks_mc": {"metrics": {"acc": acc, "acc_stderr": 0.1, "acc_norm": acc},
                                             "n_samples": 4, "wall_s": wall, "model_s": wall / 2},
                      "faircalib_kjv_cloze": {"metrics": {"acc": em, "acc_stderr": 0.2}, "n_samples": 4,
                                              "wall_s": 2 * wall}},
            "groups": {"faircalib_mc": {"metrics": {"acc": (acc + em) / 2}, "tasks": ["faircalib_tasks_mc",
                                                                                      "faircalib_kjv_cloze"],
                                        "wall_s": 3 * wall}},
            "settings": {"limit": 4}, "decoding": {"steps": 8}, "versions": {"lm_eval": "x"}, "wall_s": 3 * wall}


def test_shape_and_table():
    parts = {"fidelity": {"fp": {"nll": 2.0, "masked_tokens": 40, "wall_s": 0.5},
                          "quantized": {"nll": 2.5, "kl_to_ref": 0.1, "top1_agree": 0.9, "masked_tokens": 40,
                                        "wall_s": 1.5}, "sequences": 2, "seq_len": 8, "data": "d"},
             "faircalib_mc": {"fp": _lm(0.5, 0.25, 1.0), "quantized": _lm(0.25, 0.25, 2.0)}}
    metrics, full = shape_eval_results(parts)
    assert metrics["fidelity"] == parts["fidelity"]
    assert metrics["faircalib_tasks_mc"] == {"fp": {"acc": 0.5, "acc_stderr": 0.1, "acc_norm": 0.5, "n_samples": 4,
                                                    "wall_s": 1.0},
                                             "quantized": {"acc": 0.25, "acc_stderr": 0.1, "acc_norm": 0.25,
                                                           "n_samples": 4, "wall_s": 2.0}}
    assert metrics["faircalib_mc"]["quantized"] == {"acc": 0.25, "wall_s": 6.0}
    assert metrics["faircalib_mc"]["group_of"] == ["faircalib_tasks_mc", "faircalib_kjv_cloze"]
    assert full == {"faircalib_mc": parts["faircalib_mc"]}

    table = rows({"metrics": metrics})
    assert [(r.task, r.metric) for r in table] == [
        ("fidelity", "nll"), ("fidelity", "kl_to_ref"), ("fidelity", "top1_agree"),
        ("faircalib_kjv_cloze", "acc"), ("faircalib_tasks_mc", "acc"), ("faircalib_tasks_mc", "acc_norm"),
        ("faircalib_mc", "acc")]
    nll, kl = table[0], table[1]
    assert nll.values == {"fp": 2.0, "quantized": 2.5} and nll.delta == pytest.approx(0.5)
    assert nll.wall_s == {"fp": 0.5, "quantized": 1.5} and kl.wall_s == {}  # wall time on a task's first row
    assert kl.values == {"fp": None, "quantized": 0.1} and kl.delta is None
    mc = table[4]
    assert mc.stderr == {"fp": 0.1, "quantized": 0.1} and mc.n == 4 and mc.delta == pytest.approx(-0.25)
    assert table[-1].group and not mc.group

    md = results_markdown({"job": "j1", "name": "n", "model": "m", "method": "faircalib", "bits": "w4a4",
                           "metrics": metrics, "lm_eval": full, "wall_s": 9.0,
                           "settings": EvalConfig(tasks=("fidelity", "faircalib_mc"), n=2, seq_len=8, data="d",
                                                  limit=4, mc_num=2, check_greedy=False).to_dict()})
    assert "| task | metric | FP | W4A4 (faircalib) | Δ | n | wall s (FP / quantized) |" in md
    assert "| fidelity | nll | 2.0000 | 2.5000 | +0.5000 |  | 0.5 / 1.5 |" in md
    assert "| faircalib_tasks_mc | acc | 0.5000 ±0.100 | 0.2500 ±0.100 | -0.2500 | 4 | 1.0 / 2.0 |" in md
    assert "| [faircalib_mc] | acc | 0.3750 | 0.2500 | -0.1250 |  | 3.0 / 6.0 |" in md


def test_fp_only_results():
    metrics, _ = shape_eval_results({"fidelity": {"fp": {"nll": 3.0, "wall_s": 0.2}}})
    [r] = rows({"metrics": metrics})
    assert (r.task, r.metric, r.values, r.delta) == ("fidelity", "nll", {"fp": 3.0}, None)
    assert rows(None) == [] and rows({}) == []


def test_sweep_comparison_rows_and_deltas_vs_fp():
    from types import SimpleNamespace

    from faircalib.orchestrator.report import sweep_comparison
    from faircalib.orchestrator.store import JobState

    def job(i, method, bits, probe, fp, q):
        metrics = {"fidelity": {"fp": {"nll": fp}, **({"quantized": {"nll": q}} if q is not None else {})}}
        return SimpleNamespace(id=f"j{i}", name=f"n{i}", state=JobState.SUCCEEDED, model="zoo:m", method=method,
                               bits=bits, labels={"probe": probe} if probe else {}, results={"metrics": metrics})

    cmp = sweep_comparison([job(1, "faircalib", "w4a4", "schedule-late", 2.0, 2.5),
                            job(2, "faircalib", "w4a4", "schedule-early", 2.0, 2.25), job(3, "fp", "w16a16", None, 2.0, None)])
    assert cmp["metrics"] == ["fidelity/nll"]
    assert [(r["method"], r["probe"]) for r in cmp["rows"]] == [
        ("faircalib", "schedule-early"), ("faircalib", "schedule-late"), ("fp", "-")]
    assert [r["values"]["fidelity/nll"]["delta"] for r in cmp["rows"]] == [0.25, 0.5, None]
    assert cmp["rows"][1]["values"]["fidelity/nll"] == {"value": 2.5, "fp": 2.0, "delta": 0.5}
