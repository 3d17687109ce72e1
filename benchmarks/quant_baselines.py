"""Quantization baselines side by side (issue 4): FP, RTN, QuaRot, FlatQuant, QDrop-style at W4A4, and
FlatQuant at W8A8 and W3A4, on one model in one run.

    python benchmarks/quant_baselines.py --model zoo:tiny-llada --json [--fast]
    python benchmarks/quant_baselines.py --model random:dream --json --fast    # no zoo model needed

Per row: held-out masked-token NLL (and relative to FP), mean KL(FP || quantized), top-1 agreement with
FP (faircalib.eval.fidelity on `builtin:mix:heldout`), calibration wall time (data: `builtin:mix:train`,
disjoint), checkpoint bytes on disk vs the FP model saved the same way, the shape-only size model
(bf16 FP vs packed) for this model and the LLaDA-8B / Dream-7B shapes, and peak memory of calibration
streaming vs non-streaming. Memory is measured in a fresh subprocess per (method, mode): the kernel's
peak-RSS counter (VmHWM) is reset after model + data are loaded, and the reported figure is
VmHWM - VmRSS(before) = peak resident memory added by calibration (CPU; model and activations share it).
Memory probes run 1 epoch (the peak does not depend on the epoch count), after a warm-up calibration of a
1-layer tiny model so that lazily loaded libraries are not counted.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from faircalib.calibrate import CalibConfig, quantize
from faircalib.checkpoint import checkpoint_bytes, save_quantized
from faircalib.data import sample_token_sequences
from faircalib.eval.fidelity import compare_to_reference
from faircalib.models import build_model, load_dllm, parse_config, save_model_dir
from faircalib.models.config import DLLMConfig
from faircalib.quant import QuantConfig

ROWS = [("fp", None), ("rtn", "w4a4"), ("quarot", "w4a4"), ("flatquant", "w4a4"), ("qdrop", "w4a4"),
        ("flatquant", "w8a8"), ("flatquant", "w3a4")]
MEMORY_METHODS = ("quarot", "flatquant", "qdrop")
CALIB_SOURCE, HELDOUT_SOURCE = "builtin:mix:train", "builtin:mix:heldout"

# official 8B / 7B configs (fields as published; same dicts as tests/faircalib/models/test_models.py)
LLADA_8B = {"model_type": "llada", "architectures": ["LLaDAModelLM"], "activation_type": "silu", "alibi": False,
            "block_type": "llama", "d_model": 4096, "embedding_size": 126464, "eos_token_id": 126081,
            "include_bias": False, "include_qkv_bias": False, "layer_norm_type": "rms", "mask_token_id": 126336,
            "max_sequence_length": 4096, "mlp_hidden_size": 12288, "n_heads": 32, "n_kv_heads": 32, "n_layers": 32,
            "pad_token_id": 126081, "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "vocab_size": 126464,
            "weight_tying": False}
DREAM_7B = {"model_type": "Dream", "architectures": ["DreamModel"], "hidden_act": "silu", "hidden_size": 3584,
            "intermediate_size": 18944, "mask_token_id": 151666, "max_position_embeddings": 131072,
            "num_attention_heads": 28, "num_hidden_layers": 28, "num_key_value_heads": 4, "pad_token_id": 151643,
            "eos_token_id": 151643, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "tie_word_embeddings": False,
            "vocab_size": 152064}


def load(source: str):
    """(model, tokenizer, description). random:ARCH = a zoo-sized random model + a BPE trained on the mix."""
    if source.startswith("random:"):
        from faircalib.data import iter_documents
        from faircalib.training.tokenizer import special_ids, train_bpe_tokenizer

        arch = source.split(":", 1)[1]
        tok = train_bpe_tokenizer(iter_documents("builtin:mix:train"), vocab_size=1024)
        ids = special_ids(tok)
        cfg = DLLMConfig(arch=arch, d_model=256, n_layers=4, n_heads=4, n_kv_heads=4 if arch == "llada" else 2,
                         d_ff=768 if arch == "llada" else 704, vocab_size=len(tok), mask_token_id=ids["mask"],
                         qkv_bias=arch == "dream", pad_token_id=ids["pad"], eos_token_id=ids["eos"])
        model = build_model(cfg).init_weights(0).eval()
        return model, tok, f"random {arch} (init_weights(0), zoo-sized; NOT a trained model)"
    loaded = load_dllm(source)
    return loaded.model, loaded.tokenizer, source


def data(tok, a):
    calib = sample_token_sequences(tok, CALIB_SOURCE, a.n_calib, a.seq_len, seed=0)
    held = sample_token_sequences(tok, HELDOUT_SOURCE, a.n_eval, a.seq_len, seed=1)
    return calib, held


def dir_bytes(d: Path, suffix: str = ".safetensors") -> int:
    return sum(p.stat().st_size for p in d.iterdir() if p.name.endswith(suffix))


def calib_cfg(a, epochs=None, streaming=True) -> CalibConfig:
    return CalibConfig(epochs=a.epochs if epochs is None else epochs, batch_size=4, streaming=streaming)


# ------------------------------------------------------------------------------------------ memory probe
def memory_probe(a) -> None:
    """Child process: load, reset the peak counter, calibrate, print the peak added by calibration."""
    from peak_memory import peak_bytes, reset_peak  # benchmarks/peak_memory.py (the script's own folder)

    model, tok, _ = load(a.model)
    calib, _ = data(tok, a)
    method, setting, mode = a.memprobe.split(",")
    import gc

    from faircalib.models import tiny_model

    # warm-up on a tiny model so lazily loaded code (LAPACK, optimiser kernels) is not counted as calibration
    warm = tiny_model(model.config.arch, n_layers=1)
    quantize(warm, QuantConfig.from_bits(setting, method=method), calib[:2, :16] % 90,
             calib_cfg=calib_cfg(a, epochs=1, streaming=mode == "streaming"))
    del warm
    gc.collect()
    before = reset_peak()
    quantize(model, QuantConfig.from_bits(setting, method=method), calib,
             calib_cfg=calib_cfg(a, epochs=1, streaming=mode == "streaming"))
    print(json.dumps({"peak_added_bytes": peak_bytes() - before, "rss_before_bytes": before}))


def run_probe(a, method: str, setting: str, mode: str) -> int | None:
    cmd = [sys.executable, __file__, "--model", a.model, "--n-calib", str(a.mem_n_calib), "--seq-len",
           str(a.mem_seq_len), "--n-eval", "1", "--threads", str(a.threads), "--memprobe", f"{method},{setting},{mode}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    if out.returncode:
        print(out.stderr[-2000:], file=sys.stderr)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_added_bytes"]


# ------------------------------------------------------------------------------------------ main
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="zoo:tiny-llada")
    p.add_argument("--json", action="store_true", help="print the JSON report only")
    p.add_argument("--fast", action="store_true", help="small data and 3 epochs (smoke run)")
    p.add_argument("--n-calib", type=int)
    p.add_argument("--seq-len", type=int)
    p.add_argument("--n-eval", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--no-memory", action="store_true", help="skip the streaming/non-streaming memory probes")
    p.add_argument("--mem-n-calib", type=int, help="calibration sequences for the memory probes")
    p.add_argument("--mem-seq-len", type=int, help="sequence length for the memory probes")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: shared machine)")
    p.add_argument("--memprobe", help=argparse.SUPPRESS)
    a = p.parse_args()
    defaults = {"n_calib": 16, "seq_len": 64, "n_eval": 16, "epochs": 3, "mem_n_calib": 16, "mem_seq_len": 64} \
        if a.fast else {"n_calib": 64, "seq_len": 128, "n_eval": 64, "epochs": 15, "mem_n_calib": 128,
                        "mem_seq_len": 256}
    for k, v in defaults.items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    torch.set_flush_denormal(True)
    torch.set_num_threads(a.threads)
    if a.memprobe:
        memory_probe(a)
        return
    torch.manual_seed(0)
    fp, tok, desc = load(a.model)
    calib, held = data(tok, a)
    log = (lambda *x: None) if a.json else (lambda *x: print(*x, file=sys.stderr, flush=True))
    tmp = Path(tempfile.mkdtemp(prefix="quant_baselines_"))
    save_model_dir(fp, tmp / "fp")
    fp_disk = dir_bytes(tmp / "fp")
    rows = []
    for method, setting in ROWS:
        log(f"{method} {setting} ...")
        if method == "fp":
            res = compare_to_reference(fp, held, fp)
            rows.append({"method": "fp", "setting": "fp32", "nll": res.nll, "kl_to_fp": 0.0, "top1_agree": 1.0,
                         "calib_time_s": 0.0, "checkpoint_bytes": fp_disk})
            fp_nll = res.nll
            continue
        qcfg = QuantConfig.from_bits(setting, method=method)
        model = copy.deepcopy(fp)
        t0 = time.perf_counter()
        quantize(model, qcfg, calib if qcfg.needs_data else None, calib_cfg=calib_cfg(a))
        t_cal = time.perf_counter() - t0
        res = compare_to_reference(model, held, fp)
        ck = save_quantized(model, tmp / f"{method}_{setting}")
        size = checkpoint_bytes(fp.config, qcfg)
        info = model.faircalib_quant.get("calibration") or {}
        rows.append({"method": method, "setting": setting, "nll": res.nll, "nll_rel_fp": res.nll / fp_nll - 1,
                     "kl_to_fp": res.kl_to_ref, "top1_agree": res.top1_agree, "calib_time_s": round(t_cal, 2),
                     "checkpoint_bytes": dir_bytes(ck), "checkpoint_ratio_vs_fp_on_disk": fp_disk / dir_bytes(ck),
                     "size_model_bf16": {k: size[k] for k in ("fp_bytes", "quant_bytes", "ratio")},
                     "block_losses": [b["final_loss"] for b in info.get("blocks", [])],
                     "block_init_losses": [b["init_loss"] for b in info.get("blocks", [])],
                     "fallbacks": model.faircalib_quant.get("fallbacks", [])})
        log(json.dumps({k: rows[-1][k] for k in ("method", "setting", "nll", "kl_to_fp", "top1_agree",
                                                 "calib_time_s")}))
    memory = {}
    if not a.no_memory:
        cfg = fp.config
        act_set = a.mem_n_calib * a.mem_seq_len * cfg.d_model * 4  # one (N, S, D) float32 activation set
        model_b = sum(t.numel() * t.element_size() for t in fp.state_dict().values())
        memory["resident_tensor_accounting"] = {
            "activation_set_bytes": act_set,
            "streaming_bytes": 2 * act_set,  # current block input + its FP output
            # every block's activations, the per-block FP-pass buffer, and the FP teacher copy
            "non_streaming_bytes": (cfg.n_layers + 2) * act_set + model_b,
        }
        for method in MEMORY_METHODS:
            log(f"memory {method} ...")
            s = run_probe(a, method, "w4a4", "streaming")
            n = run_probe(a, method, "w4a4", "non_streaming")
            memory[method] = {"streaming_bytes": s, "non_streaming_bytes": n,
                              "reduction": (n / s) if s and n else None}
    by = {(r["method"], r["setting"]): r for r in rows}
    w4 = [by[(m, "w4a4")] for m in ("rtn", "quarot", "flatquant", "qdrop")]
    big = {}
    for name, raw in (("llada-8b", LLADA_8B), ("dream-7b", DREAM_7B)):
        cfg = parse_config(raw)
        big[name] = {s: checkpoint_bytes(cfg, QuantConfig.from_bits(s, method="flatquant"))
                     for s in ("w4a4", "w3a4", "w8a8")}
        big[name]["w4a4_quantize_head"] = checkpoint_bytes(cfg, QuantConfig.from_bits("w4a4", quantize_head=True))
        for v in big[name].values():
            v.pop("breakdown", None)
    report = {
        "benchmark": "quant_baselines", "model": desc, "device": "cpu", "torch_threads": torch.get_num_threads(),
        "calibration": {"source": CALIB_SOURCE, "n": a.n_calib, "seq_len": a.seq_len, "epochs": a.epochs,
                        "batch_size": 4},
        "eval": {"source": HELDOUT_SOURCE, "n": a.n_eval, "seq_len": a.seq_len,
                 "metric": "masked-token NLL at mask ratios 0.15..0.9, KL(FP||Q), top-1 agreement"},
        "rows": rows,
        "peak_calibration_memory": {"how": "fresh subprocess per (method, mode), W4A4, 1 epoch, after a warm-up: "
                                           "VmHWM reset after load via /proc/self/clear_refs; peak RSS added by "
                                           "calibration. resident_tensor_accounting: the engine's activation sets "
                                           "(+ FP teacher copy) from shapes",
                                    "n_calib": a.mem_n_calib, "seq_len": a.mem_seq_len, **memory},
        "checkpoint_bytes_large_shapes": big,
        "checks": {
            "rtn_worst_at_w4a4": all(by[("rtn", "w4a4")]["kl_to_fp"] >= r["kl_to_fp"] for r in w4),
            "w8a8_within_1pct_nll_of_fp": abs(by[("flatquant", "w8a8")]["nll_rel_fp"]) < 0.01,
            "learned_better_than_rtn": all(by[(m, "w4a4")]["kl_to_fp"] < by[("rtn", "w4a4")]["kl_to_fp"]
                                           for m in ("flatquant", "qdrop")),
        },
    }
    print(json.dumps(report, indent=2))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
