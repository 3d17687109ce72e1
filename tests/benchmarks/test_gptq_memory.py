"""benchmarks/gptq_memory.py: GPTQ's in-place factorisation of a consumed Hessian holds no second float64 matrix."""
from __future__ import annotations

import os

import pytest


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc")
def test_consuming_the_hessian_factors_it_without_a_second_float64_matrix(load_bench):
    bench = load_bench("gptq_memory")  # each measurement in a fresh process (benchmarks/gptq_memory.py)
    peaks = {mode: bench.measure(3072, mode)["peak_matrices"] for mode in bench.MODES}
    # in place: the float32 result (0.5 matrix) plus LAPACK's workspace (measured 0.71 at K = 3072)
    assert peaks["in_place"] < 0.85
    # through torch.linalg, consumed or not, two more float64 matrices at the worst step (measured 2.10)
    assert peaks["torch"] > 1.5 and peaks["torch_copy"] > 1.5
