"""Deterministic draws from a source: `n` token sequences of length `S` for Stage II calibration
(fully observed text, as SPEC.md §3) and `n` prompts for Stage I probing."""
from __future__ import annotations

import random

import torch

from faircalib.data.corpus import iter_documents, iter_prompts
from faircalib.data.tasks import families_of
from faircalib.errors import DataError


def tokenize_stream(tokenizer, source: str, max_tokens: int, seed: int = 0) -> torch.Tensor:
    """Documents of `source` in a seed-shuffled order, tokenized and joined with EOS, up to max_tokens."""
    docs = list(iter_documents(source, seed=seed))
    if not docs:
        raise DataError(f"data source {source!r} yielded no documents; check the file or dataset")
    random.Random(seed).shuffle(docs)
    sep = tokenizer.eos_token_id
    ids: list[int] = []
    for doc in docs:
        ids.extend(tokenizer(doc, add_special_tokens=False)["input_ids"])
        if sep is not None:
            ids.append(sep)
        if len(ids) >= max_tokens:
            break
    return torch.tensor(ids[:max_tokens], dtype=torch.long)


def sample_token_sequences(tokenizer, source: str, n: int, seq_len: int, seed: int = 0) -> torch.Tensor:
    """(n, seq_len) LongTensor of windows drawn uniformly from the tokenized source."""
    if n < 1 or seq_len < 2:
        raise DataError(f"calibration needs n >= 1 and seq_len >= 2 (got n={n}, seq_len={seq_len})")
    stream = tokenize_stream(tokenizer, source, max_tokens=max(4 * n * seq_len, 8 * seq_len), seed=seed)
    if stream.numel() < seq_len + 1:
        raise DataError(f"data source {source!r} has only {stream.numel()} tokens; need more than seq_len={seq_len}")
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, stream.numel() - seq_len + 1, (n,), generator=g)
    return torch.stack([stream[s:s + seq_len] for s in starts.tolist()])  # (n, S)


def sample_prompts(source: str, n: int, seed: int = 0) -> list[str]:
    """`n` prompts from `source`, deterministic in `seed`."""
    if families_of(source) is not None:
        prompts = list(iter_prompts(source, seed=seed, n_hint=n))
        return prompts[:n]
    pool = list(iter_prompts(source, seed=seed))
    if len(pool) < n:
        raise DataError(f"prompt source {source!r} has {len(pool)} prompts but {n} were requested; lower n")
    return random.Random(seed).sample(pool, n)
