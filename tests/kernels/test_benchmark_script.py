"""benchmarks/kernels.py runs on a CPU machine: interpreter correctness pass, the "needs a CUDA GPU"
speed marker with the command, the speed code path on tiny shapes (--speed-smoke), and the memory model
(the script's own count agrees with faircalib.checkpoint.checkpoint_bytes)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "kernels.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("faircalib_bench_kernels", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU output of the script")
def test_cpu_run_reports_correctness_memory_and_missing_speed(dev, bench, capsys):
    out = bench.main(["--json", "--speed-smoke"])
    assert capsys.readouterr().out.strip().startswith("{")
    c = out["correctness"]
    assert c["all_exact"] and c["quantize"]["max_code_diff"] <= 1
    assert out["speed"] == "needs a CUDA GPU" and "benchmarks/kernels.py --json" in out["gpu_command"]
    smoke = out["speed_smoke_not_a_measurement"]
    assert all(r.get("accumulator_exact") for r in smoke["gemm"])
    assert smoke["block"]["w4a4_linears_on_kernels"] == 7
    for name in ("llada-8b", "dream-7b"):
        row = out["memory"]["checkpoint"][name]
        assert row["own_count"]["quant_bytes"] == pytest.approx(row["w4a4_bytes"], rel=1e-3)
        assert row["own_count"]["fp_bytes"] == pytest.approx(row["fp_bf16_bytes"], rel=1e-3)
        assert 2.5 < row["ratio"] < row["ratio_w4_head"] < row["ratio_w4_head_and_embed"] < 4.5
