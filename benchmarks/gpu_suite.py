"""The GPU validation suite's measurements (issues 12 and 17), called by benchmarks/gpu_suite.sh after
benchmarks/kernels.py; one JSON object, written after every section (a timeout keeps what was done).

Sections (CUDA sizes; --tiny runs the same code at small sizes on CPU, through Triton's interpreter):
  env          device name, compute capability, torch / Triton / CUDA versions
  gemm         per shape (M in {256, 1024, 4096} x LLaDA-8B / Dream-7B (K, N)): torch.matmul bf16 TFLOP/s,
               torch._int_mm int8 TOPS (the int8 tensor-core reference; Hopper has no int4 MMA, so int8 on
               unpacked nibbles is the ceiling), W4A4 TOPS without and with the fused activation quantizer,
               W4A4 / bf16, W4A4 / int8, and exactness of the W4A4 int32 accumulator against _int_mm on the
               unpacked codes on EVERY shape (plus the bf16 epilogue's max relative error)
  quantizer    fused quantize kernel GB/s vs the measured device-to-device copy bandwidth
  block        one LLaDA-8B-shape decoder block, bf16 FP vs W4A4 (RTN, runtime QuantLinear): latency at
               2048 tokens and resident memory (tensor bytes and CUDA allocated bytes)
  stage2_block Stage II (FAIR-Calib engine, FlatQuant W4A4) of one full-width LLaDA-8B block at the paper's
               128 x 1024 calibration tokens: one epoch timed, extrapolated to 15 epochs and 32 blocks; CUDA
               peak memory (compared with the paper's 12-15 GB for 8B)
  probe        Stage I rollouts on a 2-layer synthetic LLaDA-8B at B = 16, T = L = 256: rollout steps/s

    python benchmarks/gpu_suite.py --json --kernels kernels.json --out-dir benchmarks/results/gpu
    python benchmarks/gpu_suite.py --json --tiny --out-dir /tmp/x          # CPU mode (tests)
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import re
import sys
import time
from pathlib import Path
from typing import Any

import torch

if not torch.cuda.is_available():  # before triton is imported: run the kernels in the interpreter
    os.environ.setdefault("TRITON_INTERPRET", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

GEMM_SHAPES = {"llada-8b": [(4096, 4096), (4096, 12288), (12288, 4096)],
               "dream-7b": [(3584, 3584), (3584, 512), (3584, 18944), (18944, 3584)]}
GEMM_M = (256, 1024, 4096)
NOMINAL_INT8_DENSE_TOPS = {"H100 80GB HBM3": 1979.0, "H100 NVL": 1671.0, "H100 PCIe": 1513.0, "H200": 1979.0,
                           "A100": 624.0, "L40S": 733.0, "L4": 242.0}
PAPER_PEAK_GB_8B = (12, 15)
TINY_GEMM = {"tiny": [(128, 64), (64, 96)]}
TINY_LLADA = {"d_model": 64, "n_heads": 4, "n_kv_heads": 4, "mlp_hidden_size": 96}


def _bench_ms(fn, device: torch.device, reps: int = 3) -> float:
    if device.type == "cuda":
        from triton.testing import do_bench

        return float(do_bench(fn, warmup=10, rep=50))
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2] * 1e3


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def env(device: torch.device) -> dict:
    import triton

    out = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else
           f"cpu ({platform.processor() or platform.machine()})",
           "mode": "cuda" if device.type == "cuda" else "cpu, Triton interpreter (TRITON_INTERPRET=1), tiny sizes",
           "torch": torch.__version__, "triton": triton.__version__, "cuda": torch.version.cuda,
           "python": sys.version.split()[0], "platform": platform.platform()}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        out.update(capability=f"{p.major}.{p.minor}", memory_gb=round(p.total_memory / 2 ** 30, 1),
                   sms=p.multi_processor_count)
    return out


# ------------------------------------------------------------------------------------------ gemm
def _int_mm(a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """int8 (M, K) x int8 (N, K)ᵀ -> exact int32 (M, N): torch._int_mm (int8 tensor cores on CUDA)."""
    try:
        return torch._int_mm(a, w.t())
    except (RuntimeError, NotImplementedError):  # e.g. a CPU build without it: exact int64 fallback
        return (a.long() @ w.long().t()).int()


def gemm_case(model: str, M: int, K: int, N: int, device: torch.device) -> dict:
    from faircalib.kernels import packing

    from faircalib import kernels as fk

    g = torch.Generator().manual_seed(M * 7 + K * 3 + N)
    a = torch.randint(-8, 8, (M, K), generator=g, dtype=torch.int8)
    w = torch.randint(-8, 8, (N, K), generator=g, dtype=torch.int8)
    ap, wp = packing.pack_int4(a).to(device), packing.pack_int4(w).to(device)
    a8, w8 = a.to(device), w.to(device)
    sa = (torch.rand(M, generator=g) * 0.01 + 1e-4).to(device)
    sw = (torch.rand(N, generator=g) * 0.01 + 1e-4).to(device)
    x = torch.randn(M, K, generator=g).to(device=device, dtype=torch.bfloat16)
    wt = (torch.randn(N, K, generator=g) / K ** 0.5).to(device=device, dtype=torch.bfloat16)
    ops = 2.0 * M * N * K
    exact_acc = _int_mm(a8, w8)  # the torch int8 reference, exact
    acc = fk.w4a4_accumulate(ap, wp, backend="triton")
    y = fk.w4a4_matmul(ap, sa, wp, sw, None, torch.float32, backend="triton")
    y_ref = exact_acc.double() * sa.double()[:, None] * sw.double()[None, :]
    rel = float(((y.double() - y_ref).abs() / y_ref.abs().clamp(min=1e-6)).max())
    row = {"model": model, "M": M, "K": K, "N": N, "accumulator_exact": bool(torch.equal(acc, exact_acc)),
           "epilogue_f32_max_rel_err": rel}
    t_bf = _bench_ms(lambda: torch.matmul(x, wt.t()), device)
    t_i8 = _bench_ms(lambda: _int_mm(a8, w8), device)
    t_w4 = _bench_ms(lambda: fk.w4a4_matmul(ap, sa, wp, sw, None, torch.bfloat16, backend="triton"), device)
    t_w4q = _bench_ms(lambda: fk.w4a4_linear(x, wp, sw, backend="triton"), device)
    row.update(bf16_ms=t_bf, int8_ms=t_i8, w4a4_ms=t_w4, w4a4_with_quant_ms=t_w4q,
               bf16_tflops=ops / t_bf / 1e9, int8_tops=ops / t_i8 / 1e9, w4a4_tops=ops / t_w4 / 1e9,
               w4a4_with_quant_tops=ops / t_w4q / 1e9, w4a4_over_bf16=t_bf / t_w4,
               w4a4_with_quant_over_bf16=t_bf / t_w4q, w4a4_over_int8=t_i8 / t_w4)
    return row


def gemm(device: torch.device, tiny: bool) -> dict:
    shapes, ms = (TINY_GEMM, (32,)) if tiny else (GEMM_SHAPES, GEMM_M)
    rows = [_guard(gemm_case, model, M, K, N, device) for model, kns in shapes.items() for K, N in kns for M in ms]
    ok = [r for r in rows if "error" not in r]
    out: dict[str, Any] = {"rows": rows, "all_exact": bool(ok) and all(r["accumulator_exact"] for r in ok)
                           and len(ok) == len(rows)}
    big = [r for r in ok if r["M"] >= 2048]
    if big:
        out["geomean_w4a4_over_bf16_M_ge_2048"] = math.exp(sum(math.log(r["w4a4_over_bf16"]) for r in big) / len(big))
        out["goal_1.5x_bf16_at_M_ge_2048"] = out["geomean_w4a4_over_bf16_M_ge_2048"] >= 1.5
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        peak = next((v for k, v in NOMINAL_INT8_DENSE_TOPS.items() if k in name), None)
        out["nominal_int8_dense_tops"] = peak
        for r in ok:
            r["w4a4_fraction_of_int8_nominal"] = r["w4a4_tops"] / peak if peak else None
            r["w4a4_fraction_of_int8_measured"] = r["w4a4_tops"] / r["int8_tops"]
    out["table"] = [f"{r['model']} M={r['M']} {r['K']}x{r['N']} | bf16 {r['bf16_tflops']:.1f} TFLOP/s | int8 "
                    f"{r['int8_tops']:.1f} TOPS | W4A4 {r['w4a4_tops']:.1f} TOPS | W4A4/bf16 {r['w4a4_over_bf16']:.2f}"
                    f" | exact {r['accumulator_exact']}" for r in ok]
    return out


# ------------------------------------------------------------------------------------------ quantizer
def quantizer(device: torch.device, tiny: bool) -> dict:
    from faircalib import kernels as fk
    from faircalib.quant.transforms import balanced_factors

    cases = [(32, 128, False), (32, 128, True)] if tiny else \
        [(M, K, t) for M in (4096,) for K in (4096, 12288, 3584, 18944) for t in (False, True)]
    rows = []
    for M, K, transform in cases:
        def case(M=M, K=K, transform=transform) -> dict:
            g = torch.Generator().manual_seed(K)
            x = torch.randn(M, K, generator=g).to(device=device, dtype=torch.bfloat16)
            d = (torch.rand(K, generator=g) + 0.5).to(device)
            p1 = p2 = None
            if transform:
                n1, n2 = balanced_factors(K)
                p1 = (torch.eye(n1) + 0.1 * torch.randn(n1, n1, generator=g)).to(device)
                p2 = (torch.eye(n2) + 0.1 * torch.randn(n2, n2, generator=g)).to(device)
            t = _bench_ms(lambda: fk.quantize_activation_int4(x, d, p1, p2, backend="triton"), device)
            nbytes = M * K * 2 + M * K // 2 + M * 4 + K * 4
            return {"M": M, "K": K, "transform": transform, "ms": t, "gbps": nbytes / t / 1e6}
        rows.append(_guard(case))
    n = (1 << 20) if tiny else (1 << 30)
    a = torch.empty(n // 2, dtype=torch.bfloat16, device=device)
    b = torch.empty_like(a)
    copy_gbps = 2 * n / _bench_ms(lambda: b.copy_(a), device) / 1e6
    for r in rows:
        if "gbps" in r:
            r["fraction_of_copy"] = r["gbps"] / copy_gbps
    return {"measured_copy_gbps": copy_gbps, "rows": rows}


# ------------------------------------------------------------------------------------------ block
def _tensor_bytes(m: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in list(m.parameters()) + list(m.buffers()))


def block(device: torch.device, tiny: bool) -> dict:
    from faircalib.models import parse_config, synth_config
    from faircalib.models.layers import make_context
    from faircalib.models.llada import LLaDABlock
    from faircalib.quant.config import QuantConfig
    from faircalib.quant.fold import fold_block
    from faircalib.quant.runtime import QuantLinear

    cfg = parse_config(synth_config("llada-8b", 1, TINY_LLADA if tiny else None))
    tokens = 16 if tiny else 2048
    torch.manual_seed(0)
    fp = LLaDABlock(cfg)
    with torch.no_grad():
        for name, p in fp.named_parameters():
            p.copy_(torch.randn_like(p) * 0.02 if p.ndim > 1 else torch.ones_like(p))
    fp = fp.to(torch.bfloat16).eval()
    w4 = copy.deepcopy(fp)
    fold_block(w4, QuantConfig(method="rtn"))
    if device.type != "cuda":
        for m in w4.modules():
            if isinstance(m, QuantLinear):
                m.kernel_backend = "triton"
    out: dict[str, Any] = {"d_model": cfg.d_model, "d_ff": cfg.d_ff, "tokens": tokens,
                           "fp_tensor_bytes": _tensor_bytes(fp), "w4a4_tensor_bytes": _tensor_bytes(w4)}
    out["tensor_bytes_ratio"] = out["fp_tensor_bytes"] / out["w4a4_tensor_bytes"]
    x = torch.randn(1, tokens, cfg.d_model).to(device=device, dtype=torch.bfloat16)
    ctx = make_context(tokens, cfg.head_dim, cfg.rope_theta, None, device)
    for key, mod in (("fp", fp), ("w4a4", w4)):
        if device.type == "cuda":
            torch.cuda.empty_cache()
            base = torch.cuda.memory_allocated(device)
        mod.to(device)
        if device.type == "cuda":
            out[f"{key}_cuda_allocated_bytes"] = torch.cuda.memory_allocated(device) - base
        with torch.no_grad():
            out[f"{key}_ms"] = _bench_ms(lambda mod=mod: mod(x, ctx), device)
            y = mod(x, ctx).float()
        out[f"{key}_out"] = y
    out["w4a4_rel_err_vs_fp"] = float((out.pop("w4a4_out") - out["fp_out"]).norm() / out["fp_out"].norm())
    out.pop("fp_out")
    out["speedup_w4a4"] = out["fp_ms"] / out["w4a4_ms"]
    out["w4a4_linears_on_kernels"] = sum(isinstance(m, QuantLinear) and m._use_w4a4_kernels(x)
                                         for m in w4.modules())
    return out


# ------------------------------------------------------------------------------------------ Stage II
def stage2_block(device: torch.device, tiny: bool) -> dict:
    """calibrate_layerwise on a 1-layer synthetic LLaDA-8B (full width, bf16 on the host) with N x S
    calibration tokens, 2 epochs: the second epoch's duration (event to event) is the epoch time; the rest
    of the block's time (FP pass, loss evaluations, fold) is the fixed part."""
    from faircalib.calibrate import CalibConfig
    from faircalib.calibrate.engine import calibrate_layerwise
    from faircalib.models import synthetic_model
    from faircalib.quant import QuantConfig

    N, S = (4, 32) if tiny else (128, 1024)
    model = synthetic_model("llada-8b", 1, overrides=TINY_LLADA if tiny else None)
    ids = torch.randint(0, 126000, (N, S), generator=torch.Generator().manual_seed(0))
    weights = torch.linspace(0.1, 1.0, S)  # a position prior's shape (values do not change the cost)
    epochs: list[float] = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()

    def progress(e: dict) -> None:
        if e["event"] == "epoch":
            _sync(device)
            epochs.append(time.perf_counter())

    res = calibrate_layerwise(model, ids, QuantConfig(method="faircalib"), CalibConfig(epochs=2),
                              position_weights=weights, device=device, progress=progress)
    wall = time.perf_counter() - t0
    b = res.blocks[0]
    epoch_s = epochs[1] - epochs[0]
    fixed_s = max(0.0, b.time_s - 2 * epoch_s)
    per_block_15 = fixed_s + 15 * epoch_s
    out = {"calibration_tokens": [N, S], "epochs_run": 2, "batch_size": CalibConfig().batch_size,
           "steps_per_epoch": -(-N // CalibConfig().batch_size), "block_time_s": round(b.time_s, 2),
           "epoch_s": round(epoch_s, 4), "fixed_per_block_s": round(fixed_s, 4),
           "extrapolated_block_15_epochs_s": round(per_block_15, 4),
           "extrapolated_32_blocks_15_epochs_h": round(32 * per_block_15 / 3600, 3),
           "wall_s": round(wall, 2), "init_loss": b.init_loss, "final_loss": b.final_loss,
           "host_activation_bytes": 2 * N * S * model.config.d_model * 2}
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        out.update(cuda_peak_bytes=peak, cuda_peak_gb=round(peak / 2 ** 30, 2),
                   paper_peak_gb_8b=list(PAPER_PEAK_GB_8B),
                   note="streaming: the device holds one block + one batch; activations stay on the host")
    return out


# ------------------------------------------------------------------------------------------ probe
def probe(device: torch.device, tiny: bool) -> dict:
    from faircalib.models import synth_tokenizer, synthetic_model
    from faircalib.probe import ProbeConfig, probe_prior

    B, T = (4, 8) if tiny else (16, 256)
    model = synthetic_model("llada-8b", 2, device=device, overrides=TINY_LLADA if tiny else None)
    tok = synth_tokenizer("llada-8b")
    cfg = ProbeConfig(n_samples=B, steps=T, window=T, batch_size=B)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _sync(device)
    t0 = time.perf_counter()
    prior = probe_prior(model, tok, None, cfg, model_hash="gpu-suite", device=device)
    _sync(device)
    wall = time.perf_counter() - t0
    out = {"layers": 2, "batch": B, "steps": T, "window": T, "wall_s": round(wall, 2),
           "rollout_steps_per_s": round(T / wall, 3), "rows_per_s": round(B / wall, 3),
           "prior_finite": bool(torch.isfinite(prior.curve).all())}
    if device.type == "cuda":
        out["cuda_peak_gb"] = round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 2)
    return out


# ------------------------------------------------------------------------------------------ driver
def _guard(fn, *args) -> dict:
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - recorded in the JSON, the suite goes on
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return {"args": [a if isinstance(a, (int, float, str)) else str(a) for a in args],
                "error": f"{type(e).__name__}: {e}"[:800]}


SECTIONS = {"gemm": gemm, "quantizer": quantizer, "block": block, "stage2_block": stage2_block, "probe": probe}


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:60]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="Print the JSON result (always printed).")
    ap.add_argument("--tiny", action="store_true", help="Small sizes (CPU mode, tests).")
    ap.add_argument("--kernels", default=None, help="benchmarks/kernels.py's JSON to include.")
    ap.add_argument("--out-dir", default=str(Path(__file__).resolve().parent / "results" / "gpu"))
    ap.add_argument("--budget-s", type=float, default=420.0, help="Skip sections once this much time is used.")
    ap.add_argument("--sections", default=",".join(SECTIONS))
    a = ap.parse_args(argv)
    torch.set_flush_denormal(True)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    tiny = a.tiny or not cuda
    result: dict[str, Any] = {"suite": "gpu_suite", "tiny": tiny, "env": env(device), "sections_s": {}}
    if a.kernels and Path(a.kernels).is_file():
        try:
            result["kernels"] = json.loads(Path(a.kernels).read_text())
        except json.JSONDecodeError as e:
            result["kernels"] = {"error": f"unreadable kernels.py output: {e}"}
    name = ("cpu-smoke" if tiny and not cuda else slug(result["env"]["device"])) + time.strftime("-%Y%m%d")
    out = Path(a.out_dir) / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for sec in [s for s in a.sections.split(",") if s]:
        if time.perf_counter() - t0 > a.budget_s:
            result[sec] = {"skipped": f"time budget {a.budget_s}s used up"}
            continue
        ts = time.perf_counter()
        result[sec] = _guard(SECTIONS[sec], device, tiny)
        result["sections_s"][sec] = round(time.perf_counter() - ts, 2)
        out.write_text(json.dumps(result, indent=1, default=str) + "\n")
        print(f"[gpu_suite] {sec}: {result['sections_s'][sec]}s", file=sys.stderr, flush=True)
    result["total_s"] = round(time.perf_counter() - t0, 2)
    result["out"] = str(out)
    out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(json.dumps(result, indent=1, default=str))
    return result


if __name__ == "__main__":
    main()
