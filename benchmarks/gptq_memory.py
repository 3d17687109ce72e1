"""Peak memory of GPTQ's Hessian factorisation (faircalib.quant.gptq.gptq_factor), side by side:

    python benchmarks/gptq_memory.py --k 8192 --json benchmarks/results/gptq_memory.json

- in_place:   consume=True on a contiguous CPU Hessian, LAPACK in H's own storage (what QuaRot runs);
- torch:      consume=True on the same Hessian given as a transposed (non-contiguous) view, so the factor
              runs through torch.linalg (the code path before the in-place one; still used on CUDA);
- torch_copy: consume=False (the caller keeps H; one more copy).
Each in a fresh single-threaded process, the Hessian handed over as QuaRot hands it (no other
reference, so a consuming path may free it): the peak resident memory above the Hessian (VmHWM after
resetting it, Linux), in (K, K) float64 matrices and GB, and the wall time. The peak in matrices does
not depend on K beyond LAPACK's fixed workspace, so it extrapolates to Dream-7B's down_proj (K = 18944,
2.87 GB per float64 matrix).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

MODES = ("in_place", "torch", "torch_copy")
DREAM_DOWN_K = 18944


def _child(k: int, mode: str) -> None:
    import scipy.linalg.lapack  # noqa: F401  (a one-time library load, not the factorisation's)
    import torch
    from peak_memory import peak_bytes, reset_peak  # benchmarks/peak_memory.py (the script's own folder)

    from faircalib.quant.gptq import gptq_factor

    torch.set_num_threads(1)
    x = torch.randn(k + 64, k, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    h = x.T @ x  # (K, K) symmetric positive-definite
    del x

    base = reset_peak()
    t0 = time.perf_counter()
    given = [h.T if mode == "torch" else h]
    del h  # a consumed Hessian is handed over (as QuaRot's `stats.pop(point).H`): nothing else holds it
    gptq_factor(given.pop(), consume=mode != "torch_copy")
    print(json.dumps({"peak_above_h_bytes": peak_bytes() - base, "seconds": time.perf_counter() - t0}))


def measure(k: int, mode: str) -> dict:
    """Run one factorisation in a fresh process -> {peak_matrices, peak_gb, seconds}."""
    out = subprocess.run([sys.executable, __file__, "--child", mode, "--k", str(k)], capture_output=True,
                         text=True, check=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    return {"peak_matrices": r["peak_above_h_bytes"] / (k * k * 8), "peak_above_h_gb": r["peak_above_h_bytes"] / 1e9,
            "seconds": round(r["seconds"], 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--k", type=int, default=8192)
    ap.add_argument("--json", default=None)
    ap.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        _child(a.k, a.child)
        return
    res = {"k": a.k, "threads": 1, "matrix_gb": a.k * a.k * 8 / 1e9, "modes": {m: measure(a.k, m) for m in MODES}}
    mat = DREAM_DOWN_K ** 2 * 8 / 1e9
    res["dream_down_proj"] = {"k": DREAM_DOWN_K, "matrix_gb": mat, **{
        f"{m}_peak_incl_h_gb": round(mat * (1 + res["modes"][m]["peak_matrices"]), 2) for m in MODES}}
    print(json.dumps(res, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
