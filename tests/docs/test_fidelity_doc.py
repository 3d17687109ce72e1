"""docs/fidelity.md stays true: its findings table and its timing table are re-derived from the committed
results (benchmarks/results/fidelity_long-*_w4a4.json) and fidelity.py's own estimate, and every option it
shows exists in the script's parser."""
from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "fidelity.md"
KERNELS = {"native bf16": "native bf16 GEMM",
           "emulated bf16": "float32 GEMM on bf16 operands, rounded to bf16 (faircalib/bf16.py)"}


def _section(title: str) -> str:
    text = DOC.read_text()
    start = text.index(title)
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def _table_rows(section: str) -> list[list[str]]:
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in section.splitlines()
            if line.strip().startswith("|") and "---" not in line]
    return rows[1:]  # without the header


def _result(model: str) -> dict:
    return json.loads((ROOT / "benchmarks" / "results" / f"fidelity_{model}_w4a4.json").read_text())


def test_the_findings_table_is_the_committed_results():
    rows = _table_rows(_section("## 6. What it found"))
    assert [r[0] for r in rows] == ["long-dream", "long-llada"]
    for model, fp, rtn, fq, fc, diff, verdict in rows:
        res = _result(model)
        m = res["methods"]
        assert fp == f"{100 * m['fp']['em']['mean']:.1f}%" and rtn == f"{100 * m['rtn']['em']['mean']:.1f}%"
        for cell, name in ((fq, "flatquant"), (fc, "faircalib")):
            em = m[name]["em"]
            assert em["n_seeds"] == 5 and cell == f"{100 * em['mean']:.1f} ± {100 * em['std']:.1f}%"
        p = res["paired"]["faircalib_vs_flatquant"]["em"]
        want = f"{100 * p['delta']:+.2f} [{100 * p['ci_low']:+.2f}, {100 * p['ci_high']:+.2f}]"
        assert diff == want and verdict == p["verdict"]


def test_the_timing_table_is_what_estimate_prints_for_the_committed_rows(load_bench):
    fid = load_bench("fidelity")
    rows = _table_rows(_section("## 3. Running it"))
    assert len(rows) == 4
    for model, kernel, per_row, full, without in rows:
        est = fid.estimate_plan(fid.PROFILES["default"], _result(model)["rows"], workers=2, kernel=KERNELS[kernel])
        assert per_row == f"{est['row_cost_s']:.0f}"
        assert float(full.removesuffix(" h")) == est["hours_full_plan"]
        assert float(without.removesuffix(" h")) == est["hours_without_ablations"]


def test_every_option_the_doc_shows_exists(load_bench):
    fid = load_bench("fidelity")
    script = (ROOT / "benchmarks" / "fidelity.py").read_text()
    shown = set(re.findall(r"(--[a-z][a-z-]+)", DOC.read_text()))
    assert {"--estimate", "--budget-hours", "--report-only", "--workers", "--json", "--report"} <= shown
    for opt in shown:
        assert f'"{opt}"' in script, f"docs/fidelity.md shows {opt}, which benchmarks/fidelity.py does not take"
    assert fid.PROFILES["default"]["n_eval"] == 1000 and fid.PROFILES["default"]["main_seeds"] == 5
