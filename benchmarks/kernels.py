"""W4A4 kernels: correctness, speed vs bf16, and memory, side by side in one JSON object.

    python benchmarks/kernels.py --json            # on a CUDA machine: everything below
    python benchmarks/kernels.py --json            # on CPU: correctness (Triton interpreter) + memory

Sections:
  correctness  Triton kernels vs the torch references on small shapes (on CPU through TRITON_INTERPRET=1):
               pack/unpack bit-exact, fused quantize codes/scales (exact without a transform; count of ±1
               code differences with one), GEMM int32 accumulator exact, epilogue max relative error.
  speed        (CUDA only) W4A4 GEMM throughput (TOPS) vs torch.matmul in bf16 (TFLOP/s) for M in
               {256, 1024, 4096} at the LLaDA-8B and Dream-7B (K, N) shapes, GEMM alone and with the fused
               activation quantizer in front; the fused quantize kernel's achieved bandwidth vs the device
               (nominal peak and a measured device-to-device copy); one LLaDA-8B-shape decoder block, FP
               bf16 vs W4A4 (the runtime's QuantLinear, RTN weights; with and without FlatQuant's online
               Kronecker transforms), latency in ms. On CPU: "needs a CUDA GPU" + the command.
  memory       W4A4 checkpoint bytes vs bf16 at LLaDA-8B / Dream-7B shapes (faircalib.checkpoint's
               `checkpoint_bytes`, cross-checked by this script's own count), and the resident tensor
               bytes of the zoo models FP vs W4A4 (RTN) when `zoo:tiny-llada` / `zoo:tiny-dream` exist.

`--speed-smoke` runs the speed code on CPU with tiny shapes (interpreter, meaningless numbers) to check
that it executes; it is not a measurement.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

if not torch.cuda.is_available():  # before triton is imported: run the kernels in the interpreter
    os.environ.setdefault("TRITON_INTERPRET", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from faircalib.kernels import packing
from faircalib.kernels import reference as ref

from faircalib import kernels as fk
from faircalib.models.config import DLLMConfig

GPU_COMMAND = "python benchmarks/kernels.py --json > kernels_gpu.json"

# official shapes (config.json of GSAI-ML/LLaDA-8B-Base and Dream-org/Dream-v0-Base-7B)
LLADA_8B = DLLMConfig(arch="llada", d_model=4096, n_layers=32, n_heads=32, n_kv_heads=32, d_ff=12288,
                      vocab_size=126464, mask_token_id=126336, rope_theta=500000.0)
DREAM_7B = DLLMConfig(arch="dream", d_model=3584, n_layers=28, n_heads=28, n_kv_heads=4, d_ff=18944,
                      vocab_size=152064, mask_token_id=151666, qkv_bias=True, rope_theta=1000000.0)
GEMM_SHAPES = {  # (K, N) of the distinct block linears
    "llada-8b": [(4096, 4096), (4096, 12288), (12288, 4096)],
    "dream-7b": [(3584, 3584), (3584, 512), (3584, 18944), (18944, 3584)],
}
GEMM_M = (256, 1024, 4096)
NOMINAL_PEAK_GBPS = {"H100 80GB HBM3": 3350.0, "H100 PCIe": 2000.0, "H100 NVL": 3900.0, "H200": 4800.0,
                     "A100-SXM4-80GB": 2039.0, "A100-SXM4-40GB": 1555.0, "A100-PCIE-40GB": 1555.0}
MISSING_ON_CPU = [
    ("speed.gemm: W4A4 GEMM TOPS vs torch.matmul bf16 TFLOP/s (and ratio) for M in {256, 1024, 4096} at "
     "LLaDA-8B (4096x4096, 4096x12288, 12288x4096) and Dream-7B (3584x3584, 3584x512, 3584x18944, 18944x3584)"),
    "speed.gemm[*].w4a4_with_quant: the same including the fused activation quantizer",
    "speed.quantize: fused quantize kernel GB/s vs the device's nominal peak and measured copy bandwidth",
    "speed.block: one LLaDA-8B-shape decoder block latency, FP bf16 vs W4A4 (with/without online transforms)",
    "memory.zoo_resident.*.cuda_allocated_bytes: GPU-resident bytes of the zoo models FP vs W4A4",
]


# ------------------------------------------------------------------------------------------- helpers
def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _bench_ms(fn, device: torch.device) -> float:
    """Mean time of fn() in ms: triton.testing.do_bench on CUDA, wall-clock median on CPU."""
    if device.type == "cuda":
        from triton.testing import do_bench

        return float(do_bench(fn, warmup=25, rep=100))
    fn()
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def _balanced(k: int) -> tuple[int, int]:
    """n1 <= n2 with n1 * n2 = k, n1 as close to sqrt(k) as possible and n2 even."""
    for n1 in range(int(k ** 0.5), 0, -1):
        if k % n1 == 0 and (k // n1) % 2 == 0:
            return n1, k // n1
    raise ValueError(f"no even factorisation of {k}")


def _tensor_bytes(module: torch.nn.Module) -> int:
    seen, total = set(), 0
    for t in list(module.parameters()) + list(module.buffers()):
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total


# --------------------------------------------------------------------------------------- correctness
def correctness(device: torch.device) -> dict:
    """Triton vs reference on small shapes (works in the interpreter)."""
    g = _gen(0)
    out: dict = {}
    q = torch.randint(-8, 8, (33, 130), generator=g, dtype=torch.int8)
    p = fk.pack_int4(q.to(device), backend="triton")
    out["pack_bit_exact"] = bool(torch.equal(p.cpu(), packing.pack_int4(q)))
    out["unpack_roundtrip_exact"] = bool(torch.equal(fk.unpack_int4(p, backend="triton").cpu(), q))

    quant = []
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        for n1, n2, with_diag in ((None, None, False), (None, None, True), (8, 16, True), (12, 16, True),
                                  (6, 10, False)):
            K = 128 if n1 is None else n1 * n2
            x = torch.randn(48, K, generator=g)
            x[:, 5] *= 25.0
            x = x.to(dtype)
            d = torch.rand(K, generator=g) + 0.5 if with_diag else None
            p1 = torch.eye(n1) + 0.3 * torch.randn(n1, n1, generator=g) if n1 else None
            p2 = torch.eye(n2) + 0.3 * torch.randn(n2, n2, generator=g) if n2 else None
            dv = (lambda t: None if t is None else t.to(device))
            a, s = fk.quantize_activation_int4(x.to(device), dv(d), dv(p1), dv(p2), clip=0.9, backend="triton")
            ra, rs = ref.quantize_activation_int4(x, d, p1, p2, clip=0.9)
            diff = packing.unpack_int4(a.cpu()).int() - packing.unpack_int4(ra).int()
            quant.append({"case": f"{str(dtype).removeprefix('torch.')} K={K} "
                                  f"{f'kron={n1}x{n2}' if n1 else 'no-transform'}{' diag' if with_diag else ''}",
                          "exact_expected": n1 is None, "codes_differing": int((diff != 0).sum()),
                          "codes": diff.numel(), "max_code_diff": int(diff.abs().max()),
                          "scale_max_rel_err": float(((s.cpu() - rs).abs() / rs).max())})
    out["quantize"] = {
        "no_transform_bit_exact": all(r["codes_differing"] == 0 and r["scale_max_rel_err"] == 0.0
                                      for r in quant if r["exact_expected"]),
        "transform_codes_differing": sum(r["codes_differing"] for r in quant if not r["exact_expected"]),
        "transform_codes": sum(r["codes"] for r in quant if not r["exact_expected"]),
        "max_code_diff": max(r["max_code_diff"] for r in quant),
        "scale_max_rel_err": max(r["scale_max_rel_err"] for r in quant),
        "cases": [r["case"] for r in quant]}

    gemm = []
    for M, N, K in ((16, 32, 64), (37, 50, 200), (64, 128, 256), (45, 70, 1000)):
        a = torch.randint(-8, 8, (M, K), generator=g, dtype=torch.int8)
        w = torch.randint(-8, 8, (N, K), generator=g, dtype=torch.int8)
        ap, wp = packing.pack_int4(a), packing.pack_int4(w)
        acc = fk.w4a4_accumulate(ap.to(device), wp.to(device), backend="triton").cpu()
        exact = (a.long() @ w.long().t()).int()
        sa = torch.rand(M, generator=g) * 0.05 + 1e-3
        sw = torch.rand(N, generator=g) * 0.05 + 1e-3
        bias = torch.randn(N, generator=g)
        rel = {}
        for od in (torch.float32, torch.bfloat16, torch.float16):
            y = fk.w4a4_matmul(ap.to(device), sa.to(device), wp.to(device), sw.to(device), bias.to(device), od,
                               backend="triton").cpu().float()
            yr = ref.w4a4_matmul(ap, sa, wp, sw, bias, od).float()
            rel[str(od).removeprefix("torch.")] = float(((y - yr).abs() / yr.abs().clamp(min=1e-3)).max())
        gemm.append({"MxNxK": f"{M}x{N}x{K}", "accumulator_exact": bool(torch.equal(acc, exact)),
                     "epilogue_max_rel_err": rel})
    out["gemm"] = gemm
    out["all_exact"] = bool(out["pack_bit_exact"] and out["unpack_roundtrip_exact"]
                            and all(r["accumulator_exact"] for r in gemm) and out["quantize"]["no_transform_bit_exact"])
    return out


# --------------------------------------------------------------------------------------------- speed
def _gemm_case(model: str, M: int, K: int, N: int, device: torch.device) -> dict:
    g = _gen(M + K + N)
    a_codes = torch.randint(-8, 8, (M, K), generator=g, dtype=torch.int8)
    w_codes = torch.randint(-8, 8, (N, K), generator=g, dtype=torch.int8)
    ap, wp = packing.pack_int4(a_codes).to(device), packing.pack_int4(w_codes).to(device)
    sa = (torch.rand(M, generator=g) * 0.01).to(device)
    sw = (torch.rand(N, generator=g) * 0.01).to(device)
    x = torch.randn(M, K, generator=g).to(device=device, dtype=torch.bfloat16)
    wt = torch.randn(N, K, generator=g).div(K ** 0.5).to(device=device, dtype=torch.bfloat16)
    ops = 2.0 * M * N * K
    # correctness at this shape (int32 accumulator vs the exact reference), at the smallest M only
    exact = None
    if M == min(GEMM_M) or device.type != "cuda":
        acc = fk.w4a4_accumulate(ap, wp, backend="triton")
        exact = bool(torch.equal(acc, ref.w4a4_accumulate(ap, wp)))
    t_w4 = _bench_ms(lambda: fk.w4a4_matmul(ap, sa, wp, sw, None, torch.bfloat16, backend="triton"), device)
    t_w4q = _bench_ms(lambda: fk.w4a4_linear(x, wp, sw, backend="triton"), device)
    t_bf = _bench_ms(lambda: torch.matmul(x, wt.t()), device)
    return {"model": model, "M": M, "K": K, "N": N, "accumulator_exact": exact,
            "w4a4_ms": t_w4, "w4a4_tops": ops / t_w4 / 1e9, "w4a4_with_quant_ms": t_w4q,
            "w4a4_with_quant_tops": ops / t_w4q / 1e9, "bf16_ms": t_bf, "bf16_tflops": ops / t_bf / 1e9,
            "speedup_vs_bf16": t_bf / t_w4, "speedup_with_quant_vs_bf16": t_bf / t_w4q}


def _quantize_case(M: int, K: int, transform: bool, device: torch.device) -> dict:
    g = _gen(K)
    x = torch.randn(M, K, generator=g).to(device=device, dtype=torch.bfloat16)
    d = (torch.rand(K, generator=g) + 0.5).to(device)
    p1 = p2 = None
    if transform:
        n1, n2 = _balanced(K)
        p1 = (torch.eye(n1) + 0.1 * torch.randn(n1, n1, generator=g)).to(device)
        p2 = (torch.eye(n2) + 0.1 * torch.randn(n2, n2, generator=g)).to(device)
    t = _bench_ms(lambda: fk.quantize_activation_int4(x, d, p1, p2, backend="triton"), device)
    nbytes = M * K * 2 + M * K // 2 + M * 4 + K * 4
    if transform:
        nbytes += (p1.numel() + p2.numel()) * 4
    return {"M": M, "K": K, "transform": list(_balanced(K)) if transform else None, "ms": t,
            "bytes": nbytes, "gbps": nbytes / t / 1e6}


def _copy_gbps(device: torch.device, nbytes: int = 1 << 30) -> float:
    a = torch.empty(nbytes // 2, dtype=torch.bfloat16, device=device)
    b = torch.empty_like(a)
    t = _bench_ms(lambda: b.copy_(a), device)
    return 2 * nbytes / t / 1e6


def _decoder_block(cfg: DLLMConfig, tokens: int, device: torch.device, dtype: torch.dtype) -> dict:
    """One block of `cfg`'s shape: FP vs the runtime's W4A4 QuantLinear (RTN), plus FlatQuant online
    Kronecker transforms at the four activation points (random near-identity; latency only)."""
    from faircalib.models.dream import DreamBlock
    from faircalib.models.layers import make_context
    from faircalib.models.llada import LLaDABlock
    from faircalib.quant.config import QuantConfig
    from faircalib.quant.fold import fold_block
    from faircalib.quant.runtime import KroneckerOnline, QuantLinear

    block_cls = LLaDABlock if cfg.arch == "llada" else DreamBlock
    torch.manual_seed(0)
    with torch.device(device):
        fp = block_cls(cfg)
    for name, p in fp.named_parameters():
        with torch.no_grad():
            p.copy_(torch.randn_like(p) * 0.02 if p.ndim > 1 else torch.ones_like(p) if "norm" in name
                    else torch.zeros_like(p))
    fp = fp.to(dtype).eval()
    w4 = copy.deepcopy(fp)
    fold_block(w4, QuantConfig(method="rtn"))
    w4 = w4.eval()
    if device.type != "cuda":  # --speed-smoke: force the Triton path (interpreter) as CUDA would take it
        for m in w4.modules():
            if isinstance(m, QuantLinear):
                m.kernel_backend = "triton"
    w4k = copy.deepcopy(w4)
    widths = {"qkv": cfg.d_model, "o": cfg.n_heads * cfg.head_dim, "gate_up": cfg.d_model, "down": cfg.d_ff}
    for point, k in widths.items():
        n1, n2 = _balanced(k)
        w4k.act_transforms[point] = KroneckerOnline.from_tensors(
            torch.ones(k, device=device), torch.eye(n1, device=device) + 0.01, torch.eye(n2, device=device) + 0.01)
    x = torch.randn(1, tokens, cfg.d_model, device=device, dtype=dtype)
    ctx = make_context(tokens, cfg.head_dim, cfg.rope_theta, None, device)
    res = {"d_model": cfg.d_model, "d_ff": cfg.d_ff, "n_heads": cfg.n_heads, "batch": 1, "tokens": tokens,
           "dtype": str(dtype).removeprefix("torch."),
           "w4a4_linears_on_kernels": sum(isinstance(m, QuantLinear) and m._use_w4a4_kernels(x)
                                          for m in w4.modules())}
    with torch.no_grad():
        y_fp, y_w4 = fp(x, ctx), w4(x, ctx)
        res["block_output_rel_err_w4a4_vs_fp"] = float((y_w4.float() - y_fp.float()).norm() / y_fp.float().norm())
        res["fp_ms"] = _bench_ms(lambda: fp(x, ctx), device)
        res["w4a4_ms"] = _bench_ms(lambda: w4(x, ctx), device)
        res["w4a4_kron_ms"] = _bench_ms(lambda: w4k(x, ctx), device)
    res["speedup"] = res["fp_ms"] / res["w4a4_ms"]
    res["speedup_with_kron"] = res["fp_ms"] / res["w4a4_kron_ms"]
    return res


def speed(device: torch.device, smoke: bool = False) -> dict:
    if smoke:  # tiny shapes through the same code (CPU interpreter): checks it runs, measures nothing
        shapes = {"smoke": [(128, 64), (64, 96)]}
        ms, qcases = (32,), [(32, 128, False), (32, 128, True)]
        blk_cfg = DLLMConfig(arch="llada", d_model=64, n_layers=1, n_heads=4, n_kv_heads=4, d_ff=128,
                             vocab_size=64, mask_token_id=63)
        tokens, dtype = 16, torch.float32
    else:
        shapes, ms = GEMM_SHAPES, GEMM_M
        qcases = [(M, K, t) for M in (1024, 4096) for K in (4096, 3584, 12288, 18944) for t in (False, True)]
        blk_cfg, tokens, dtype = LLADA_8B, 2048, torch.bfloat16
    out: dict = {"gemm": [], "quantize": []}
    for model, kns in shapes.items():
        for K, N in kns:
            for M in ms:
                out["gemm"].append(_guarded(_gemm_case, model, M, K, N, device))
    big = [r for r in out["gemm"] if r.get("M", 0) >= 2048 and "speedup_vs_bf16" in r]
    if big:
        out["gemm_geomean_speedup_M_ge_2048"] = float(torch.tensor([r["speedup_vs_bf16"] for r in big]).log()
                                                      .mean().exp())
    for M, K, t in qcases:
        out["quantize"].append(_guarded(_quantize_case, M, K, t, device))
    peak = None
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        peak = next((v for k, v in NOMINAL_PEAK_GBPS.items() if k in name), None)
        out["device_bandwidth"] = {"nominal_peak_gbps": peak, "measured_copy_gbps": _copy_gbps(device)}
        for r in (r for r in out["quantize"] if "gbps" in r):
            r["fraction_of_copy"] = r["gbps"] / out["device_bandwidth"]["measured_copy_gbps"]
            r["fraction_of_nominal_peak"] = r["gbps"] / peak if peak else None
    out["block"] = _guarded(_decoder_block, blk_cfg, tokens, device, dtype)
    return out


def _guarded(fn, *args) -> dict:
    """One case; a failure is recorded in the JSON (with its arguments) instead of ending the run."""
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - reported, not swallowed
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return {"args": [a if isinstance(a, (int, float, str)) else str(a) for a in args],
                "error": f"{type(e).__name__}: {e}"[:500]}


# -------------------------------------------------------------------------------------------- memory
def _own_checkpoint_bytes(cfg: DLLMConfig) -> dict:
    """This script's count: int4 nibbles + float32 per-channel scale + float32 act clip per block linear,
    FlatQuant transforms (float32 diag + P1 + P2 per activation point), everything else bf16."""
    d, hd, L, V = cfg.d_model, cfg.head_dim, cfg.n_layers, cfg.vocab_size
    q, kv = cfg.n_heads * hd, cfg.n_kv_heads * hd
    lin = [(q, d, cfg.qkv_bias), (kv, d, cfg.qkv_bias), (kv, d, cfg.qkv_bias), (d, q, cfg.out_bias),
           (cfg.d_ff, d, cfg.out_bias), (cfg.d_ff, d, cfg.out_bias), (d, cfg.d_ff, cfg.out_bias)]
    fp_lin = sum(n * k + (n if b else 0) for n, k, b in lin) * 2
    q_lin = sum(n * k // 2 + 4 * n + 4 + (4 * n if b else 0) for n, k, b in lin)
    trans = sum(k + sum(f * f for f in _balanced(k)) for k in (d, q, d, cfg.d_ff)) * 4
    rest = (V * d * (1 if cfg.tie_word_embeddings else 2) + (2 * L + 1) * d) * 2
    fp, qb = L * fp_lin + rest, L * (q_lin + trans) + rest
    return {"fp_bytes": fp, "quant_bytes": qb, "ratio": fp / qb}


def memory(device: torch.device) -> dict:
    out: dict = {"checkpoint": {}}
    try:
        from faircalib.checkpoint import checkpoint_bytes
        from faircalib.quant.config import QuantConfig
    except ImportError:  # the quantization engine is not installed in this tree
        checkpoint_bytes = None
    for name, cfg in (("llada-8b", LLADA_8B), ("dream-7b", DREAM_7B)):
        own = _own_checkpoint_bytes(cfg)
        row = {"own_count": own}
        if checkpoint_bytes is not None:
            cb = checkpoint_bytes(cfg, QuantConfig(method="flatquant", head_bits=16, embed_bits=16))
            row.update(fp_bf16_bytes=cb["fp_bytes"], w4a4_bytes=cb["quant_bytes"], ratio=cb["ratio"],
                       source="faircalib.checkpoint.checkpoint_bytes (flatquant W4A4, FP embedding + head)",
                       breakdown=cb["breakdown"])
            row["ratio_default_int8_head_and_embed"] = checkpoint_bytes(cfg, QuantConfig(method="flatquant"))["ratio"]
            row["ratio_w4_head"] = checkpoint_bytes(cfg, QuantConfig(method="flatquant", quantize_head=True,
                                                                      embed_bits=16))["ratio"]
            row["ratio_w4_head_and_embed"] = checkpoint_bytes(
                cfg, QuantConfig(method="flatquant", quantize_head=True, quantize_embed=True))["ratio"]
        else:
            row.update(fp_bf16_bytes=own["fp_bytes"], w4a4_bytes=own["quant_bytes"], ratio=own["ratio"],
                       source="computed by benchmarks/kernels.py (checkpoint_bytes unavailable)")
        row["goal_ratio_ge_3.2"] = row.get("ratio_default_int8_head_and_embed", row["ratio"]) >= 3.2
        out["checkpoint"][name] = row
    out["zoo_resident"] = _zoo_resident(device)
    return out


def _zoo_resident(device: torch.device) -> dict:
    from faircalib.models import zoo_names

    have = set(zoo_names())
    res: dict = {}
    for name in ("tiny-llada", "tiny-dream"):
        if name not in have:
            res[name] = {"skipped": f"zoo:{name} is not in the zoo yet (being trained)"}
            continue
        from faircalib.calibrate import quantize
        from faircalib.models import load_dllm
        from faircalib.quant import QuantConfig

        fp = load_dllm(f"zoo:{name}", dtype=torch.bfloat16 if device.type == "cuda" else torch.float32).model
        row = {"fp_dtype": str(fp.dtype).removeprefix("torch."), "fp_tensor_bytes": _tensor_bytes(fp)}
        w4 = quantize(copy.deepcopy(fp).float(), QuantConfig(method="rtn")).to(fp.dtype)
        row["w4a4_tensor_bytes"] = _tensor_bytes(w4)
        row["ratio"] = row["fp_tensor_bytes"] / row["w4a4_tensor_bytes"]
        if device.type == "cuda":
            for key, m in (("fp", fp), ("w4a4", w4)):
                torch.cuda.empty_cache()
                base = torch.cuda.memory_allocated(device)
                m = m.to(device)
                row[f"{key}_cuda_allocated_bytes"] = torch.cuda.memory_allocated(device) - base
                m.cpu()
        res[name] = row
    return res


# ---------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true", help="print only the JSON object")
    ap.add_argument("--speed-smoke", action="store_true",
                    help="run the speed code on CPU with tiny shapes (checks it runs; not a measurement)")
    ap.add_argument("--skip-memory", action="store_true")
    args = ap.parse_args(argv)
    torch.set_flush_denormal(True)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    result: dict = {
        "device": torch.cuda.get_device_name(0) if cuda else f"cpu ({platform.processor() or platform.machine()})",
        "mode": "cuda" if cuda else "cpu, Triton interpreter (TRITON_INTERPRET=1)",
        "torch": torch.__version__,
    }
    t0 = time.perf_counter()
    result["correctness"] = correctness(device)
    result["correctness_seconds"] = round(time.perf_counter() - t0, 2)
    if cuda:
        result["speed"] = speed(device)
    else:
        result["speed"] = "needs a CUDA GPU"
        result["gpu_command"] = GPU_COMMAND
        result["missing_gpu_figures"] = MISSING_ON_CPU
        if args.speed_smoke:
            result["speed_smoke_not_a_measurement"] = speed(device, smoke=True)
    if not args.skip_memory:
        result["memory"] = memory(device)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
