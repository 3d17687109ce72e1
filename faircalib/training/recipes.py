"""Zoo recipes: what `faircalib zoo train NAME` builds (tokenizer, architecture, training config, decoding
defaults) and the function that runs one end to end into a model directory.

Boundary: composes tokenizer.py, trainer.py and faircalib.models; evaluation and the card's quality
numbers are card.py's job (run after training, `faircalib zoo card`).
"""
from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from faircalib.data import LONG_FAMILIES, LONG_WINDOW, iter_documents
from faircalib.errors import ConfigError
from faircalib.models import DLLMConfig, build_model, save_model_dir
from faircalib.training.tokenizer import special_ids, train_bpe_tokenizer
from faircalib.training.trainer import TrainConfig, TrainResult, save_history, train

TOKENIZER_SOURCE = "builtin:mix:train"
TRAINING_FILE = "training.json"


@dataclass(frozen=True)
class ZooRecipe:
    name: str
    arch: str
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_ff: int
    vocab_size: int
    train: TrainConfig
    decoding: dict = field(default_factory=dict)  # the model's default decoding (policy, steps, ...)
    rope_theta: float = 10000.0
    max_seq_len: int = 512
    # zoo model whose weights and tokenizer a fresh run starts from (same architecture), or None for a random
    # init; a run with --init-from ignores it (it continues its own earlier stage)
    warm_start: str | None = None

    def model_config(self, tokenizer) -> DLLMConfig:
        ids = special_ids(tokenizer)
        return DLLMConfig(arch=self.arch, d_model=self.d_model, n_layers=self.n_layers, n_heads=self.n_heads,
                          n_kv_heads=self.n_kv_heads, d_ff=self.d_ff, vocab_size=len(tokenizer),
                          mask_token_id=ids["mask"], rope_theta=self.rope_theta,
                          rms_norm_eps=1e-5 if self.arch == "llada" else 1e-6, qkv_bias=self.arch == "dream",
                          pad_token_id=ids["pad"], eos_token_id=ids["eos"], max_seq_len=self.max_seq_len)


# Chosen by short pilots on this CPU (d=256 / 4 layers, all five families, decoded accuracy on the *probe*
# split): peak lr 2e-3 left the tasks unlearned after 8.5k steps while 3e-4 learned a single family within
# a few hundred steps; the unweighted SFT loss learned faster than LLaDA's 1/p-weighted one (which puts
# most weight on nearly revealed answer windows). The text part keeps LLaDA's 1/p pre-training loss.
_TRAIN = TrainConfig(minutes=60.0, gen_length=16, sft_batch=32, text_batch=4, text_len=64, lr=3e-4,
                     min_lr_ratio=0.1, warmup_steps=100, sft_weighting="none",
                     family_weights={"arith": 1.5, "kv": 1.5}, probe_every=250, checkpoint_every=500)
# Long-answer models: same optimiser recipe, the 48-token window and the long testbed families
# (faircalib/data/long_tasks.py), warm-started from the tiny models of the same architecture (they already sort
# and reverse short lists; the long families use the same verbs and item formats). The first long recipe (random
# init, the chain / psum / shift / trace families, lr 4e-4, 100 min) stayed at chance on its families.
_LONG_TRAIN = replace(_TRAIN, minutes=60.0, gen_length=LONG_WINDOW, families=LONG_FAMILIES, lr=3e-4,
                      family_weights={}, pool_per_family=20000)
RECIPES: dict[str, ZooRecipe] = {
    # LLaDA-8B-like: full multi-head attention (n_kv_heads = n_heads), SwiGLU d_ff = 3 * d_model
    "tiny-llada": ZooRecipe(
        name="tiny-llada", arch="llada", d_model=256, n_layers=4, n_heads=4, n_kv_heads=4, d_ff=768,
        vocab_size=1024, train=_TRAIN,
        decoding={"policy": "low_confidence", "gen_length": 16, "steps": 16, "block_length": 16,
                  "temperature": 0.0}),
    # Dream-7B-like: GQA (4 heads / 2 kv heads, as 28 / 4), q/k/v bias, shifted logits, and a d_ff that is
    # neither a power of two nor 3x one (704 = 64 * 11, as Dream's 18944 = 128 * 148) so quantization's
    # Hadamard fallback is exercised
    "tiny-dream": ZooRecipe(
        name="tiny-dream", arch="dream", d_model=256, n_layers=4, n_heads=4, n_kv_heads=2, d_ff=704,
        vocab_size=1024, train=_TRAIN,
        decoding={"policy": "entropy", "gen_length": 16, "steps": 16, "temperature": 0.0}),
    # The long-answer testbed (issue "FAIR-Calib where it can matter"): the long families of
    # faircalib/data/long_tasks.py, answers of 40-46 tokens in a 48-token window (>= 83% content). 4 layers as
    # the tiny models: a 6-layer (5.6M) pilot was dropped because evaluation is the bottleneck of the fidelity
    # benchmark (48 full-sequence forwards of ~100 tokens per example; 1000 examples x ~20 method rows on two
    # CPU cores), and 4 layers also reach more training steps in the same wall budget.
    # Decoding: gen_length = steps = 48, one block (LLaDA) so the commit order is the policy's.
    "long-llada": ZooRecipe(
        name="long-llada", arch="llada", d_model=256, n_layers=4, n_heads=4, n_kv_heads=4, d_ff=768,
        vocab_size=1024, train=_LONG_TRAIN, warm_start="tiny-llada",
        decoding={"policy": "low_confidence", "gen_length": LONG_WINDOW, "steps": LONG_WINDOW,
                  "block_length": LONG_WINDOW, "temperature": 0.0}),
    "long-dream": ZooRecipe(
        name="long-dream", arch="dream", d_model=256, n_layers=4, n_heads=4, n_kv_heads=2, d_ff=704,
        vocab_size=1024, train=_LONG_TRAIN, warm_start="tiny-dream",
        decoding={"policy": "entropy", "gen_length": LONG_WINDOW, "steps": LONG_WINDOW, "temperature": 0.0}),
}


def get_recipe(name: str) -> ZooRecipe:
    name = name.removeprefix("zoo:")
    if name not in RECIPES:
        raise ConfigError(f"unknown zoo recipe {name!r}; available: {', '.join(sorted(RECIPES))}")
    return RECIPES[name]


def _warm_start(recipe: ZooRecipe):
    """-> (tokenizer, float32 model, model config) of the zoo model `recipe.warm_start`, checked to have the
    recipe's architecture exactly."""
    from faircalib.models import load_dllm

    loaded = load_dllm(f"zoo:{recipe.warm_start}")
    tokenizer, model = loaded.tokenizer, loaded.model.float()
    mcfg = recipe.model_config(tokenizer)
    have = loaded.config
    for f in ("arch", "d_model", "n_layers", "n_heads", "n_kv_heads", "d_ff", "vocab_size", "mask_token_id"):
        if getattr(have, f) != getattr(mcfg, f):
            raise ConfigError(f"recipe {recipe.name!r}: warm start zoo:{recipe.warm_start} has {f}="
                              f"{getattr(have, f)}, the recipe {getattr(mcfg, f)}; fix warm_start or the recipe")
    return tokenizer, model, mcfg


def _warm_start_record(name: str) -> dict:
    from faircalib.models import load_dllm

    path = Path(load_dllm(f"zoo:{name}").path)
    rec = json.loads((path / TRAINING_FILE).read_text())
    return {"from": f"zoo:{name}", "steps": rec.get("steps"), "tokens_seen": rec.get("tokens_seen"),
            "reproduce": rec.get("reproduce")}


def build_tokenizer(vocab_size: int):
    return train_bpe_tokenizer(iter_documents(TOKENIZER_SOURCE), vocab_size=vocab_size)


def train_zoo_model(name: str, out: str | Path, seed: int | None = None, minutes: float | None = None,
                    steps: int | None = None, threads: int | None = None, command: str = "",
                    log: Callable[[str], None] = print, init_from: str | Path | None = None,
                    progress: Callable[[dict], None] | None = None,
                    **train_overrides) -> tuple[Path, TrainResult]:
    """Train recipe `name` into directory `out` (official layout + tokenizer + training.json).

    steps > 0 fixes the run length (bit-reproducible); otherwise training runs for `minutes` (or the
    recipe's) of wall time, and the step count reached is recorded.
    init_from: continue from a model trained by this function (same recipe) instead of a fresh init: its
    weights and tokenizer, a fresh optimiser and LR schedule (warm restart), and by default the seed
    recipe seed + number of earlier stages so data order and masks do not repeat. The record lists every
    stage and the command chain that reproduces the result. progress: per-step train_step events
    (faircalib.training.trainer.train).
    """
    recipe = get_recipe(name)
    tcfg = recipe.train
    changes: dict = dict(train_overrides)
    prev: dict | None = None
    n_prev = 0  # stages before this one
    if init_from is not None:
        init_from = Path(init_from)
        if not (init_from / TRAINING_FILE).is_file():
            raise ConfigError(f"--init-from {init_from}: no {TRAINING_FILE} there; continue only from a directory "
                              f"written by `faircalib zoo train`")
        prev = json.loads((init_from / TRAINING_FILE).read_text())
        if prev.get("name") != recipe.name:
            raise ConfigError(f"--init-from {init_from}: it was trained with recipe {prev.get('name')!r}, not "
                              f"{recipe.name!r}; pass the matching NAME")
        n_prev = len(prev.get("stages") or [prev])
        if seed is None:
            seed = tcfg.seed + n_prev
    if seed is not None:
        changes["seed"] = seed
    if minutes is not None:
        changes.update(minutes=minutes, steps=0)
    if steps is not None:
        changes["steps"] = steps
    if threads is not None:
        changes["threads"] = threads
    tcfg = replace(tcfg, **changes)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    if prev is not None:
        from faircalib.models import load_dllm

        loaded = load_dllm(init_from)
        tokenizer, model = loaded.tokenizer, loaded.model.float()
        mcfg = recipe.model_config(tokenizer)
        if model.num_parameters() != prev["parameters"] or loaded.config.arch != mcfg.arch:
            raise ConfigError(f"--init-from {init_from}: weights do not match its {TRAINING_FILE}; retrain")
        log(f"continuing from {init_from} ({prev['steps']} steps so far), seed {tcfg.seed}")
        for f in sorted(init_from.glob("training_log*.jsonl")):  # keep the earlier stages' logs
            name = f.name if f.name != "training_log.jsonl" else f"training_log.stage{n_prev}.jsonl"
            (out / name).write_text(f.read_text())
    elif recipe.warm_start:
        tokenizer, model, mcfg = _warm_start(recipe)
        log(f"warm start from zoo:{recipe.warm_start} ({model.num_parameters():,} parameters)")
    else:
        tokenizer = build_tokenizer(recipe.vocab_size)
        mcfg = recipe.model_config(tokenizer)
        model = build_model(mcfg).init_weights(tcfg.seed)
    log(f"{recipe.name}: {mcfg.arch} d_model={mcfg.d_model} layers={mcfg.n_layers} heads={mcfg.n_heads}/"
        f"{mcfg.n_kv_heads} d_ff={mcfg.d_ff} vocab={mcfg.vocab_size} params={model.num_parameters():,}")

    def checkpoint(step: int) -> None:
        save_model_dir(model, out, tokenizer)
        log(f"checkpoint at step {step} -> {out}")

    result = train(model, tokenizer, tcfg, log=log, checkpoint=checkpoint, progress=progress)
    save_model_dir(model, out, tokenizer)
    save_history(result, out / "training_log.jsonl")
    record = {
        "name": recipe.name, "architecture": mcfg.arch, "parameters": model.num_parameters(),
        "model": {"d_model": mcfg.d_model, "n_layers": mcfg.n_layers, "n_heads": mcfg.n_heads,
                  "n_kv_heads": mcfg.n_kv_heads, "d_ff": mcfg.d_ff, "vocab_size": mcfg.vocab_size,
                  "mask_token_id": mcfg.mask_token_id, "logits_shifted": mcfg.logits_shifted},
        "tokenizer": {"type": "byte-level BPE, single-digit tokens", "vocab_size": len(tokenizer),
                      "trained_on": TOKENIZER_SOURCE, **special_ids(tokenizer)},
        "train_config": tcfg.to_dict(),
        "data_mix": {"sft_tasks": f"sample_tasks(split='train'), families {list(tcfg.families)} weighted "
                                  f"{tcfg.family_weights or 'uniformly'}, {tcfg.sft_batch} examples/step, "
                                  f"answer window {tcfg.gen_length} tokens EOS-padded, SFT loss weighting "
                                  f"{tcfg.sft_weighting!r}",
                     "text": f"{tcfg.text_source}, {tcfg.text_batch} x {tcfg.text_len} tokens/step"},
        "steps": result.steps, "tokens_seen": result.tokens_seen, "train_wall_s": result.wall_s,
        "total_wall_s": round(time.perf_counter() - t0, 1), "final_losses": result.final,
        "seed": tcfg.seed, "threads": tcfg.threads, "torch": torch.__version__,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "command": command, "reproduce": f"faircalib zoo train {recipe.name} --steps {result.steps} "
                                         f"--seed {tcfg.seed} --threads {tcfg.threads}",
        "decoding": recipe.decoding,
    }
    if prev is None and recipe.warm_start:
        record["warm_start"] = _warm_start_record(recipe.warm_start)
    elif prev is not None and prev.get("warm_start"):
        record["warm_start"] = prev["warm_start"]
    stage = {k: record[k] for k in ("steps", "tokens_seen", "train_wall_s", "seed", "reproduce")}
    if prev is not None:
        stages = [*(prev.get("stages") or [{k: prev[k] for k in stage}]), stage]
        stage["reproduce"] += " --init-from DIR_OF_PREVIOUS_STAGE"
        record.update(steps=sum(s["steps"] for s in stages), tokens_seen=sum(s["tokens_seen"] for s in stages),
                      train_wall_s=round(sum(s["train_wall_s"] for s in stages), 1),
                      reproduce=" && ".join(s["reproduce"] for s in stages), stages=stages,
                      warm_restart="each stage after the first starts from the previous weights with a fresh "
                                   "AdamW state and LR schedule (warm-up + cosine)")
    (out / TRAINING_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return out, result
