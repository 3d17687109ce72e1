"""Exact-match accuracy of a dLLM on procedural task examples, decoded with `faircalib.diffusion`.

Works for anything with the DiffusionLM forward signature (FP models, fake-quantized or packed W4A4
models): prompts are tokenized, decoded in batches with `generate` under the given decoding settings,
the answer window is turned into text with `decode_text` (cut at the first EOS) and compared with the
reference answer by `faircalib.data.exact_match` (whitespace-normalised string equality).

Boundary: evaluation only; decoding lives in faircalib.diffusion, task generation in faircalib.data.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from faircalib.data import TaskExample, exact_match
from faircalib.errors import ConfigError

N_SHOWN = 10  # predictions kept in the result for inspection


def evaluate_exact_match(model, tokenizer, examples: Sequence[TaskExample], decoding: dict,
                         batch_size: int = 16, seed: int = 0) -> dict:
    """-> {"per_family": {family: accuracy}, "mean": mean over families, "n": examples,
    "n_per_family": {family: count}, "decoding": the resolved settings, "examples": first predictions}.

    `decoding` holds DecodeConfig fields (policy, steps, gen_length, block_length, temperature, ...);
    policy None/absent means the model's default policy. Batch i is decoded with seed `seed + i`
    (irrelevant for greedy decoding, which is exactly reproducible).
    """
    from faircalib.diffusion import DecodeConfig, decode_text, generate, resolve_config

    if not examples:
        raise ConfigError("evaluate_exact_match needs at least one example")
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size}: must be >= 1")
    cfg = DecodeConfig.from_dict({k: v for k, v in decoding.items() if k != "seed"})
    hits: dict[str, list[bool]] = {}
    shown: list[dict] = []
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        for b, i in enumerate(range(0, len(examples), batch_size)):
            chunk = examples[i:i + batch_size]
            prompts = [torch.tensor(tokenizer(ex.prompt, add_special_tokens=False)["input_ids"], dtype=torch.long)
                       for ex in chunk]
            traj = generate(model, prompts, config=cfg, seed=seed + b)
            for ex, pred in zip(chunk, decode_text(tokenizer, traj)):
                ok = exact_match(pred, ex.answer)
                hits.setdefault(ex.family, []).append(ok)
                if len(shown) < N_SHOWN:
                    shown.append({"family": ex.family, "question": ex.question, "answer": ex.answer,
                                  "prediction": pred, "correct": ok})
    finally:
        if was_training:
            model.train()
    per_family = {f: sum(v) / len(v) for f, v in hits.items()}
    return {"per_family": per_family, "mean": sum(per_family.values()) / len(per_family), "n": len(examples),
            "n_per_family": {f: len(v) for f, v in hits.items()},
            "decoding": resolve_config(model, cfg).to_dict(), "examples": shown}
