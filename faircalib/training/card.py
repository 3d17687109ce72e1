"""Model cards for the zoo: the training record (training.json, written by recipes.py) plus held-out
quality measured here:

  heldout_masked_nll   faircalib.eval.masked_token_nll on n x seq_len token windows of builtin:mix:heldout
  heldout_exact_match  per-family exact match on sample_tasks(split="heldout") decoded with the model's
                       default decoding settings (policy, steps, gen_length, block_length)

Boundary: measures and writes `model_card.json`; never trains.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from faircalib.data import FAMILIES, sample_tasks, sample_token_sequences
from faircalib.errors import ModelLoadError
from faircalib.eval.exact_match import evaluate_exact_match
from faircalib.eval.fidelity import masked_token_nll
from faircalib.models import load_dllm
from faircalib.training.recipes import TRAINING_FILE

CARD_FILE = "model_card.json"
NLL_SOURCE = "builtin:mix:heldout"


def heldout_nll(model, tokenizer, n: int = 64, seq_len: int = 64, seed: int = 0) -> dict:
    ids = sample_token_sequences(tokenizer, NLL_SOURCE, n, seq_len, seed)  # (n, seq_len)
    return {"source": NLL_SOURCE, "sequences": n, "seq_len": seq_len, "seed": seed,
            "nll": round(masked_token_nll(model, ids, seed=seed), 4),
            "ratios": [0.15, 0.3, 0.5, 0.7, 0.9]}


def heldout_exact_match(model, tokenizer, decoding: dict, n_per_family: int = 100, seed: int = 0,
                        batch_size: int = 50, families: tuple[str, ...] = FAMILIES) -> dict:
    examples = sample_tasks(n_per_family * len(families), "heldout", seed, families)
    res = evaluate_exact_match(model, tokenizer, examples, decoding, batch_size=batch_size, seed=seed)
    return {"split": "heldout", "seed": seed, "n": res["n"], "n_per_family": res["n_per_family"],
            "per_family": {f: round(a, 4) for f, a in res["per_family"].items()},
            "mean": round(res["mean"], 4), "examples": res["examples"][:5]}


def write_model_card(directory: str | Path, n_per_family: int = 100, threads: int = 1, log=print) -> dict:
    """Evaluate the model in `directory` and write its model_card.json (training record + quality)."""
    directory = Path(directory)
    record_path = directory / TRAINING_FILE
    if not record_path.is_file():
        raise ModelLoadError(f"{directory} has no {TRAINING_FILE}; model cards are written for models trained by "
                             f"`faircalib zoo train`")
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    card = json.loads(record_path.read_text())
    loaded = load_dllm(directory)
    model, tok = loaded.model, loaded.tokenizer
    if loaded.model.num_parameters() != card["parameters"]:
        raise ModelLoadError(f"{directory}: weights have {model.num_parameters()} parameters but {TRAINING_FILE} "
                             f"records {card['parameters']}; the directory is inconsistent, retrain")
    t0 = time.perf_counter()
    card["heldout_masked_nll"] = heldout_nll(model, tok)
    log(f"heldout masked-token NLL {card['heldout_masked_nll']['nll']}")
    families = tuple(card.get("train_config", {}).get("families") or FAMILIES)
    card["heldout_exact_match"] = heldout_exact_match(model, tok, card["decoding"], n_per_family, families=families)
    em = card["heldout_exact_match"]
    log("heldout exact match " + " ".join(f"{f}={a:.1%}" for f, a in em["per_family"].items())
        + f" mean={em['mean']:.1%}")
    card["eval_wall_s"] = round(time.perf_counter() - t0, 1)
    card["weights_bytes"] = sum(p.stat().st_size for p in directory.glob("*.safetensors"))
    (directory / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")
    return card
