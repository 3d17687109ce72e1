"""Decoding throughput: the batched engine vs a naive per-sample loop, per policy, side by side.

    python benchmarks/decode.py --json [--models zoo:tiny-llada,zoo:tiny-dream] [--threads 1]

For every model and policy: `generate` at batch 1 and batch B (default 8), and the same B prompts
decoded one at a time (a loop of batch-1 calls, the naive reference). Prints one JSON object:

    steps_per_s   denoising steps per second (a batched step advances every row; the naive loop counts
                  each per-sample step)
    tokens_per_s  answer tokens produced per second (rows x gen_length / wall time)
    speedup       batched tokens/s / naive-loop tokens/s on the same prompts
    (each time is the best of --repeats interleaved runs)

If a zoo model is not present yet, a random `tiny_model` with a few-million-parameter shape (d_model 256,
4 layers, vocab 2048) stands in for it, and the JSON says so (`fallback`).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from faircalib.diffusion import generate
from faircalib.models import tiny_model, zoo_names

POLICIES = {"llada": ("low_confidence", "random"),
            "dream": ("entropy", "maskgit_plus", "topk_margin", "origin", "random")}
FALLBACK_SHAPE = {"d_model": 256, "n_layers": 4, "n_heads": 4, "n_kv_heads": 4, "d_ff": 704, "vocab_size": 2048,
                      "mask_token_id": 2047, "pad_token_id": 0, "eos_token_id": 1}


def load(spec: str) -> tuple[torch.nn.Module, object, dict]:
    """-> (model, tokenizer or None, description)."""
    name = spec.removeprefix("zoo:")
    arch = "dream" if "dream" in name else "llada"
    if spec.startswith("zoo:") and name in zoo_names():
        from faircalib.models import load_dllm

        loaded = load_dllm(spec)
        return loaded.model, loaded.tokenizer, {"source": spec, "fallback": None}
    model = tiny_model(arch, seed=0, **FALLBACK_SHAPE)
    model.init_weights(0, std=0.1)
    note = (f"{spec} is not in the zoo (have: {zoo_names() or 'none'}); measured a random tiny_model({arch!r}) "
            f"with d_model=256, 4 layers, vocab 2048 instead")
    return model.eval(), None, {"source": f"tiny_model({arch})", "fallback": note}


def make_prompts(model, tokenizer, n: int, seed: int) -> list[torch.Tensor]:
    if tokenizer is not None:
        from faircalib.data import sample_tasks

        return [torch.tensor(tokenizer.encode(t.prompt)) for t in sample_tasks(n, "heldout", seed)]
    g = torch.Generator().manual_seed(seed)
    V = model.config.vocab_size
    lengths = torch.randint(12, 41, (n,), generator=g).tolist()
    return [torch.randint(2, V - 1, (L,), generator=g) for L in lengths]


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(model, prompts, policy: str, arch: str, steps: int, gen_length: int, block: int,
            repeats: int) -> dict:
    block_length = block if (policy == "low_confidence" or (policy == "random" and arch == "llada")) else None
    kw = {"steps": steps, "gen_length": gen_length, "block_length": block_length, "seed": 0}
    B, L = len(prompts), gen_length
    t1 = tb = tn = float("inf")
    for _ in range(repeats):  # interleaved, best of `repeats`: robust to a noisy shared CPU
        t1 = min(t1, timed(lambda: generate(model, prompts[:1], policy, **kw)))
        tb = min(tb, timed(lambda: generate(model, prompts, policy, **kw)))
        tn = min(tn, timed(lambda: [generate(model, [p], policy, **kw) for p in prompts]))

    def rate(t: float, rows: int, model_steps: int) -> dict:
        return {"seconds": round(t, 4), "steps_per_s": round(model_steps / t, 2), "tokens_per_s": round(rows * L / t, 1)}

    return {
        "block_length": block_length,
        "batch_1": rate(t1, 1, steps),
        f"batch_{B}": rate(tb, B, steps),
        f"naive_loop_{B}x1": rate(tn, B, steps * B),
        "speedup_batched_vs_naive": round(tn / tb, 2),
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print only the JSON result")
    ap.add_argument("--models", default="zoo:tiny-llada,zoo:tiny-dream")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--gen-length", type=int, default=32)
    ap.add_argument("--block-length", type=int, default=8, help="LLaDA semi-AR block (low_confidence, random)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 = stable on a shared CPU)")
    ap.add_argument("--repeats", type=int, default=2, help="timed repeats per measurement (best is reported)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)

    result = {"benchmark": "decode", "device": "cpu", "threads": args.threads, "torch": torch.__version__,
              "machine": platform.machine(), "batch": args.batch, "steps": args.steps,
              "gen_length": args.gen_length, "repeats": args.repeats, "models": {}}
    t_all = time.perf_counter()
    for spec in [s.strip() for s in args.models.split(",") if s.strip()]:
        model, tok, desc = load(spec)
        arch = model.config.arch
        prompts = make_prompts(model, tok, args.batch, args.seed)
        generate(model, prompts[:2], steps=4, gen_length=8, block_length=None)  # warm-up
        entry = {**desc, "arch": arch, "params": sum(p.numel() for p in model.parameters()),
                 "prompt_lengths": [len(p) for p in prompts], "policies": {}}
        for policy in POLICIES[arch]:
            entry["policies"][policy] = measure(model, prompts, policy, arch, args.steps, args.gen_length,
                                                args.block_length, args.repeats)
        result["models"][spec] = entry
    result["wall_s"] = round(time.perf_counter() - t_all, 1)
    print(json.dumps(result, indent=None if args.json else 2))
    return result


if __name__ == "__main__":
    main()
