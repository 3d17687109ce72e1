"""Is faircalib/bf16.py's emulated bf16 GEMM the same computation as torch's native bf16 kernel? Side by side.

    python benchmarks/bf16_emulation.py --json benchmarks/results/bf16_emulation.json

1. GEMM level: (M, K) x (K, N) at the long zoo models' shapes, native bf16 vs emulated vs float32: the
   fraction of outputs that differ, by how many bf16 ulps of the output (a cancelled, small output can
   differ by several of its own ulps; `max_diff_over_rms` scales the largest difference by the outputs'
   RMS), and the time ratios.
2. Decode level, per long zoo model: the pre-registered fidelity evaluation (greedy default policy under bf16
   autocast, benchmarks/fidelity.py) of the FP model and of its RTN w4a4 model on the first `--n-native`
   held-out prompts, native vs emulated: identical sequences, identical tokens, EM agreement, time ratio.
3. Against the committed rows (computed on a CPU with bf16 units): the emulated FP and RTN decodes of the
   first `--n-ref` held-out prompts vs the per-example EM that benchmarks/results/fidelity_<model>_w4a4.json
   stores for fp@0 / rtn@0, where it has them.
4. Real shape: one window forward (faircalib.diffusion.window_logits, which applies faircalib.bf16.fast_bf16)
   of a 1-layer synthetic Dream-7B / LLaDA-8B in bf16 on `--real-tokens` tokens: torch's native bf16 vs the
   substitution vs the same model in float32: time, peak memory above the loaded bf16 model (Linux VmHWM;
   a weight over faircalib.bf16.CHUNK_ELEMENTS is upcast a column block at a time), and how far the
   logits are apart.
5. Stage II at a real shape: FlatQuant calibration (faircalib.calibrate.engine, which applies
   fast_bf16(model, training=True)) of a 1-layer synthetic Dream-7B in bf16 on `--stage2-n` sequences of
   64 tokens for one epoch, torch's native bf16 vs the substitution: time and the block's final loss.
One thread; prints and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fidelity
from peak_memory import peak_bytes, reset_peak

from faircalib.bf16 import Bf16GemmEmulation, bf16_autocast
from faircalib.devices import cpu_bf16_slowdown
from faircalib.pipeline import MethodConfig, run_method

RESULTS = Path(__file__).resolve().parent / "results"


def ulps(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """|a - b| in bf16 ulps of b (both bf16)."""
    ulp = torch.ldexp(torch.ones_like(b.float()), torch.frexp(b.float()).exponent - 8)  # 2^(e-1-7)
    return ((a.float() - b.float()).abs() / ulp)


def timed(fn, reps: int = 3) -> tuple[float, object]:
    out = fn()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def gemm_level(shapes: list[tuple[int, int, int]]) -> list[dict]:
    rows = []
    g = torch.Generator().manual_seed(0)
    for m, k, n in shapes:
        x, w = torch.randn(m, k, generator=g).bfloat16(), torch.randn(k, n, generator=g).bfloat16()
        t_nat, nat = timed(lambda x=x, w=w: x @ w)
        with Bf16GemmEmulation():
            t_emu, emu = timed(lambda x=x, w=w: x @ w)
        xf, wf = x.float(), w.float()
        t_f32, _ = timed(lambda xf=xf, wf=wf: xf @ wf)
        u = ulps(emu, nat)
        rms = nat.float().pow(2).mean().sqrt()
        rows.append({"shape": [m, k, n], "differ_frac": float((emu != nat).float().mean()),
                     "median_ulps_where_differ": float(u[emu != nat].median()) if (emu != nat).any() else 0.0,
                     "max_diff_over_rms": float((emu.float() - nat.float()).abs().max() / rms),
                     "native_over_emulated_time": t_nat / t_emu,
                     "emulated_over_float32_time": t_emu / t_f32})
        print(json.dumps(rows[-1]))
    return rows


def decode_level(model: str, n_native: int, n_ref: int) -> dict:
    prof = {**fidelity.PROFILES["default"], "n_eval": max(n_native, n_ref)}
    ctx = fidelity.Context(model, prof, Path(f"/tmp/faircalib-bf16-emulation-{model.removeprefix('zoo:')}"))
    stored = RESULTS / f"fidelity_{model.removeprefix('zoo:')}_w4a4.json"
    ref_rows = json.loads(stored.read_text())["rows"] if stored.exists() else {}
    rtn, _ = run_method(ctx.model, ctx.tok, MethodConfig(method="rtn", bits="w4a4"))
    out = {"model": model, "n_native": n_native, "n_ref": n_ref, "methods": {}}
    for name, net in (("fp", ctx.model), ("rtn", rtn)):
        tasks = ctx.eval_tasks[:n_native]
        res = {}
        for emulate in (False, True):
            ctx.emulate = emulate
            ctx.amp = lambda e=emulate: bf16_autocast(e)
            t0 = time.perf_counter()
            traj = ctx.decode(net, tasks, record=None)
            res[emulate] = (time.perf_counter() - t0, traj, fidelity.em_of(ctx, traj, tasks))
        (t_n, tr_n, em_n), (t_e, tr_e, em_e) = res[False], res[True]
        same_tok = (tr_n.tokens == tr_e.tokens)
        m = {"native_s": round(t_n, 1), "emulated_s": round(t_e, 1), "native_over_emulated_time": t_n / t_e,
             "identical_sequences": float(same_tok.all(dim=1).float().mean()),
             "identical_tokens": float(same_tok.float().mean()),
             "em_native": float(em_n.mean()), "em_emulated": float(em_e.mean()),
             "em_agreement": float((em_n == em_e).float().mean())}
        key = f"{name}@0"
        if key in ref_rows:
            tasks = ctx.eval_tasks[:n_ref]
            with torch.no_grad():
                em = fidelity.em_of(ctx, ctx.decode(net, tasks, record=None), tasks)  # emulated (pinned above)
            ref = torch.tensor(ref_rows[key]["em"][:n_ref], dtype=torch.float64)
            m["vs_committed_row"] = {"row": key, "n": n_ref, "em_committed": float(ref.mean()),
                                     "em_emulated": float(em.mean()),
                                     "em_agreement": float((em == ref).float().mean())}
        out["methods"][name] = m
        print(json.dumps({model: {name: m}}))
    return out


def real_shape(like: str, tokens: int) -> dict:
    import faircalib.bf16 as bf16mod
    from faircalib.diffusion import window_logits
    from faircalib.models.synth import synthetic_model

    model = synthetic_model(like, 1)  # bf16
    ids = torch.randint(10, 1000, (1, tokens), generator=torch.Generator().manual_seed(0))  # (1, T)
    start = tokens // 2
    out = {"like": like, "layers": 1, "tokens": tokens}
    with torch.no_grad():
        for name, emulate in (("native_bf16", False), ("emulated_bf16", True)):
            bf16mod.emulate_bf16_here = lambda e=emulate: e  # pin the choice fast_bf16 makes
            base = reset_peak()
            out[f"{name}_s"], logits = timed(lambda: window_logits(model, ids, None, start), reps=1)
            out[f"{name}_peak_above_model_gb"] = round((peak_bytes() - base) / 2 ** 30, 3)
            out[f"{name}_logits"] = logits
        out["float32_s"], f32 = timed(lambda: window_logits(model.float(), ids, None, start), reps=1)
    nat, emu = out.pop("native_bf16_logits"), out.pop("emulated_bf16_logits")
    out["native_over_emulated_time"] = out["native_bf16_s"] / out["emulated_bf16_s"]
    out["emulated_over_float32_time"] = out["emulated_bf16_s"] / out["float32_s"]
    out["top1_agreement_emulated_vs_native"] = float((emu.argmax(-1) == nat.argmax(-1)).float().mean())
    out["top1_agreement_float32_vs_native"] = float((f32.argmax(-1) == nat.argmax(-1)).float().mean())
    out["max_abs_logit_diff_emulated_vs_native"] = float((emu - nat).abs().max())
    out["max_abs_logit_diff_float32_vs_native"] = float((f32 - nat).abs().max())
    print(json.dumps(out))
    return out


def stage2(like: str, n: int, native: bool = True) -> dict:
    import faircalib.bf16 as bf16mod
    from faircalib.calibrate import CalibConfig
    from faircalib.calibrate.engine import calibrate_layerwise
    from faircalib.models.synth import synthetic_model
    from faircalib.quant.config import QuantConfig

    ids = torch.randint(10, 1000, (n, 64), generator=torch.Generator().manual_seed(0))  # (N, S)
    out = {"like": like, "layers": 1, "n": n, "seq_len": 64, "epochs": 1, "method": "flatquant"}
    for name, emulate in (("emulated_bf16", True), ("native_bf16", False))[:2 if native else 1]:
        bf16mod.emulate_bf16_here = lambda e=emulate: e  # pin the choice fast_bf16 makes
        model = synthetic_model(like, 1)  # the same bf16 weights each time
        t0 = time.perf_counter()
        res = calibrate_layerwise(model, ids, QuantConfig(method="flatquant"),
                                  CalibConfig(epochs=1, n=n, seq_len=64, batch_size=min(n, 4)))
        out[f"{name}_s"] = round(time.perf_counter() - t0, 1)
        out[f"{name}_init_loss"], out[f"{name}_final_loss"] = res.blocks[0].init_loss, res.blocks[0].final_loss
        del model, res
    if native:
        out["native_over_emulated_time"] = out["native_bf16_s"] / out["emulated_bf16_s"]
    print(json.dumps(out))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="zoo:long-dream,zoo:long-llada")
    ap.add_argument("--n-native", type=int, default=20, help="prompts decoded both ways (native is slow here)")
    ap.add_argument("--n-ref", type=int, default=100, help="prompts compared with the committed rows")
    ap.add_argument("--real", default="dream-7b,llada-8b", help="synthetic real shapes for part 4 ('' = skip)")
    ap.add_argument("--real-tokens", type=int, default=64)
    ap.add_argument("--stage2-n", type=int, default=4)
    ap.add_argument("--stage2-skip-native", action="store_true",
                    help="time only the substitution (torch's native bf16 Stage II can take tens of minutes here)")
    ap.add_argument("--parts", default="gemm,decode,real,stage2")
    ap.add_argument("--json", default=str(RESULTS / "bf16_emulation.json"))
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    result = {"machine": {"cpu_capability": torch.backends.cpu.get_cpu_capability(),
                          "cpu_bf16_slowdown": round(cpu_bf16_slowdown(), 1), "torch": torch.__version__,
                          "threads": 1},
              "settings": {"n_native": a.n_native, "n_ref": a.n_ref, "real_tokens": a.real_tokens,
                           "stage2_n": a.stage2_n}}
    parts = a.parts.split(",")
    if "gemm" in parts:  # the long zoo models' hidden, MLP and head shapes
        result["gemm"] = gemm_level([(5000, 256, 704), (5000, 704, 256), (5000, 256, 1024)])
    if "decode" in parts:
        result["decode"] = [decode_level(m, a.n_native, a.n_ref) for m in a.models.split(",")]
    if "real" in parts and a.real:
        result["real_shape"] = [real_shape(like, a.real_tokens) for like in a.real.split(",")]
    if "stage2" in parts:
        result["stage2"] = stage2("dream-7b", a.stage2_n, native=not a.stage2_skip_native)
    Path(a.json).write_text(json.dumps(result, indent=1))
    print(json.dumps({"json": a.json}))


if __name__ == "__main__":
    main()
