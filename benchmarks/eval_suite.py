"""The offline lm-eval suite on FP vs W4A4 models, side by side, with wall time per task (issue 7).

    python benchmarks/eval_suite.py --models zoo:tiny-llada,zoo:tiny-dream --methods fp,rtn,flatquant \
        --out benchmarks/results/eval_suite.json
    python benchmarks/eval_suite.py --models random:llada --limit 3 --mc-num 4 --smoke     # no zoo needed
    python benchmarks/eval_suite.py --models tiny-llada=/path/to/model_dir ...            # LABEL=PATH

For every model: each quantizing method runs `faircalib.quant.quantize` (W4A4; FlatQuant calibrated on
`builtin:mix:train`, the settings of benchmarks/quant_baselines.py) and `save_quantized` into a
checkpoint directory; then every variant (FP = the model source itself) is evaluated by the real CLI,
`faircalib eval SOURCE --tasks faircalib_suite --json ...`, in its own process (1 torch thread), and
the JSON results are merged: per task the main metric, wall time (whole lm-eval call) and model time
(answering requests), with differences to FP and time ratios to FP. Prints the merged JSON.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

MAIN_METRIC = {"faircalib_tasks_mc": "acc", "faircalib_kjv_cloze": "acc", "faircalib_kjv_ppl": "byte_perplexity"}
CALIB_SOURCE = "builtin:mix:train"


def main_metric(task: str) -> str:
    return MAIN_METRIC.get(task, "exact_match")


def load(source: str):
    """(model, tokenizer); random:ARCH = a zoo-sized random model with the zoo tokenizer (smoke runs)."""
    from faircalib.models import load_dllm

    if source.startswith("random:"):
        from faircalib.models import build_model
        from faircalib.models.config import DLLMConfig
        from faircalib.training.recipes import build_tokenizer
        from faircalib.training.tokenizer import special_ids

        arch = source.split(":", 1)[1]
        tok = build_tokenizer(1024)
        ids = special_ids(tok)
        cfg = DLLMConfig(arch=arch, d_model=256, n_layers=4, n_heads=4, n_kv_heads=4 if arch == "llada" else 2,
                         d_ff=768 if arch == "llada" else 704, vocab_size=len(tok), mask_token_id=ids["mask"],
                         qkv_bias=arch == "dream", pad_token_id=ids["pad"], eos_token_id=ids["eos"])
        return build_model(cfg).init_weights(0).eval(), tok
    loaded = load_dllm(source)
    return loaded.model, loaded.tokenizer


def quantize_to(source: str, method: str, dest: Path, a) -> dict:
    """W4A4 `method` of `source` saved as a checkpoint in dest; -> {"seconds", "path"}."""
    from faircalib.calibrate import CalibConfig, quantize
    from faircalib.checkpoint import save_quantized
    from faircalib.data import sample_token_sequences
    from faircalib.quant import QuantConfig

    model, tok = load(source)
    t0 = time.perf_counter()
    qcfg = QuantConfig(method=method, w_bits=4, a_bits=4)
    calib = None if method == "rtn" else sample_token_sequences(tok, CALIB_SOURCE, a.n_calib, a.seq_len, seed=0)
    quantize(model, qcfg, calib_ids=calib, calib_cfg=CalibConfig(epochs=a.epochs, batch_size=4))
    secs = time.perf_counter() - t0
    meta = {"source": source}
    if a.decoding:
        meta["decoding"] = a.decoding
    save_quantized(model, dest, meta=meta, tokenizer=tok)
    return {"quantize_s": round(secs, 1), "path": str(dest),
            "calibration": None if calib is None else {"source": CALIB_SOURCE, "n": a.n_calib, "seq_len": a.seq_len,
                                                       "epochs": a.epochs}}


def random_dir(source: str, dest: Path) -> str:
    from faircalib.models import save_model_dir

    model, tok = load(source)
    save_model_dir(model, dest, tokenizer=tok)
    return str(dest)


def run_cli(source: str, out: Path, a) -> dict:
    exe = Path(sys.executable).with_name("faircalib")
    cmd = [str(exe) if exe.is_file() else "faircalib", "eval", source, "--tasks", a.tasks, "--json", str(out),
           "--quiet", "--threads", str(a.threads), "--mc-num", str(a.mc_num), "--batch-size", str(a.batch_size),
           "--seed", str(a.seed)]
    if a.limit is not None:
        cmd += ["--limit", str(a.limit)]
    for k in ("gen_length", "steps", "block_length"):
        if k in a.decoding:
            cmd += [f"--{k.replace('_', '-')}", str(a.decoding[k])]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"faircalib eval failed for {source}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    res = json.loads(out.read_text())
    res["process_s"] = round(time.perf_counter() - t0, 1)
    res["table"] = proc.stdout
    return res


def summarize(results: dict) -> dict:
    """Per model: per task per variant {score, wall_s, model_s, delta_vs_fp, time_ratio_vs_fp}."""
    out = {}
    for model, variants in results.items():
        fp = variants.get("fp")
        rows = {}
        tasks = sorted({t for v in variants.values() for t in v["eval"]["tasks"]})
        for t in tasks:
            m = main_metric(t)
            row = {"metric": m}
            for name, v in variants.items():
                e = v["eval"]["tasks"].get(t)
                if e is None:
                    continue
                score = e["metrics"].get(m)
                cell = {"score": score, "wall_s": e.get("wall_s"), "model_s": e.get("model_s"), "n": e.get("n_samples")}
                if fp is not None and name != "fp" and t in fp["eval"]["tasks"]:
                    f = fp["eval"]["tasks"][t]
                    fs = f["metrics"].get(m)
                    cell["delta_vs_fp"] = None if score is None or fs is None else round(score - fs, 4)
                    if f.get("model_s"):
                        cell["model_time_ratio_vs_fp"] = round(e["model_s"] / f["model_s"], 2)
                row[name] = cell
            rows[t] = row
        groups = {}
        for name, v in variants.items():
            for g, e in v["eval"]["groups"].items():
                groups.setdefault(g, {})[name] = e["metrics"]
        out[model] = {"tasks": rows, "groups": groups,
                      "total_wall_s": {n: v["eval"]["wall_s"] for n, v in variants.items()},
                      "quantize_s": {n: v.get("quantize", {}).get("quantize_s") for n, v in variants.items()}}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="zoo:tiny-llada,zoo:tiny-dream")
    p.add_argument("--methods", default="fp,rtn,flatquant", help="fp and/or quantize methods (W4A4)")
    p.add_argument("--tasks", default="faircalib_suite")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--mc-num", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-calib", type=int, default=64)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--gen-length", type=int, default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--smoke", action="store_true", help="3 FlatQuant epochs on 8 sequences (pipeline check)")
    p.add_argument("--workdir", default=None, help="where checkpoints go (default: a temp dir)")
    p.add_argument("--out", default=None, help="also write the JSON here")
    a = p.parse_args()
    if a.smoke:
        a.n_calib, a.seq_len, a.epochs = 8, 64, 1
    a.decoding = {k: v for k, v in (("gen_length", a.gen_length), ("steps", a.steps)) if v is not None}
    torch.set_num_threads(a.threads)
    torch.set_flush_denormal(True)
    work = Path(a.workdir or tempfile.mkdtemp(prefix="faircalib_eval_suite_"))
    work.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    models_info: dict = {}
    for spec in a.models.split(","):
        model, _, path = spec.partition("=")  # LABEL=PATH evaluates PATH under the name LABEL
        src = random_dir(model, work / model.replace(":", "_")) if model.startswith("random:") else (path or model)
        results[model] = {}
        for method in a.methods.split(","):
            print(f"[{model} {method}] starting", file=sys.stderr, flush=True)
            entry: dict = {}
            target = src
            if method != "fp":
                entry["quantize"] = quantize_to(src, method, work / f"{model.replace(':', '_')}-{method}-w4a4", a)
                target = entry["quantize"]["path"]
            entry["eval"] = run_cli(target, work / f"{model.replace(':', '_')}-{method}.json", a)
            print(f"[{model} {method}] done in {entry['eval']['process_s']}s", file=sys.stderr)
            print(entry["eval"].pop("table"), file=sys.stderr)
            results[model]["fp" if method == "fp" else f"{method}-w4a4"] = entry
        from faircalib.models import weights_hash

        models_info[model] = {"source": src, "weights_sha256": weights_hash(src)}
    report = {"benchmark": "eval_suite", "tasks": a.tasks, "limit": a.limit, "mc_num": a.mc_num,
              "batch_size": a.batch_size, "threads": a.threads, "seed": a.seed,
              "machine": {"platform": platform.platform(), "cpu_count": __import__("os").cpu_count(),
                          "torch": torch.__version__, "note": "2 CPU cores shared with other jobs"},
              "models": models_info, "summary": summarize(results), "runs": results}
    text = json.dumps(report, indent=2, sort_keys=True)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
