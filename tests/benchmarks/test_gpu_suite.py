"""benchmarks/gpu_suite.sh in its CPU mode (the same code at tiny sizes, Triton's interpreter): it runs end to
end and writes one JSON with the environment, kernel correctness, the int8-referenced GEMM table with
exactness on every shape, quantizer / copy bandwidth, block latency + resident memory, a Stage II block
timing with its extrapolation, and Stage I rollout throughput."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_suite_cpu_mode_end_to_end(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OUT_DIR": str(tmp_path / "gpu")}
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_suite.sh"), "--cpu"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=900, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    files = list((tmp_path / "gpu").glob("cpu-smoke-*.json"))
    assert len(files) == 1
    d = json.loads(files[0].read_text())
    e = d["env"]
    assert e["mode"].startswith("cpu") and e["torch"] and e["triton"] and "cuda" in e
    assert d["kernels"]["correctness"]["all_exact"] is True  # benchmarks/kernels.py ran (interpreter)
    g = d["gemm"]
    assert g["all_exact"] is True and len(g["rows"]) == 2 and len(g["table"]) == 2
    for row in g["rows"]:
        assert row["accumulator_exact"] and row["epilogue_f32_max_rel_err"] < 1e-5
        assert min(row["bf16_tflops"], row["int8_tops"], row["w4a4_tops"], row["w4a4_with_quant_tops"]) > 0
    assert d["quantizer"]["measured_copy_gbps"] > 0 and all(r["gbps"] > 0 for r in d["quantizer"]["rows"])
    b = d["block"]
    assert b["w4a4_linears_on_kernels"] == 7 and b["tensor_bytes_ratio"] > 3 and b["w4a4_rel_err_vs_fp"] < 0.2
    s = d["stage2_block"]
    assert s["epochs_run"] == 2 and s["epoch_s"] > 0 and s["final_loss"] is not None
    # fixed + 15 epochs, each value rounded to 4 decimals: allow the rounding slack only
    assert s["extrapolated_block_15_epochs_s"] >= 15 * s["epoch_s"] - 1e-3
    p = d["probe"]
    assert p["rollout_steps_per_s"] > 0 and p["prior_finite"] and (p["batch"], p["steps"]) == (4, 8)
    assert set(d["sections_s"]) == {"gemm", "quantizer", "block", "stage2_block", "probe"}
