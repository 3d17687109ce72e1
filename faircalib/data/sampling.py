"""Deterministic draws from a source: `n` token sequences of length `S` for Stage II calibration
(fully observed text, as docs/method.md §3) and `n` prompts for Stage I probing."""
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


def answer_window_ids(tokenizer, answer: str, window: int, where: str = "answer") -> list[int]:
    """The answer written as " ANSWER" (the continuation after "A:") followed by EOS up to `window` tokens:
    the exact window a dLLM fills at inference (and is trained on). At least one EOS must fit."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise DataError("the tokenizer has no eos token; answer windows are EOS-padded (train one with "
                        "faircalib.training.tokenizer)")
    ids = tokenizer(" " + answer, add_special_tokens=False)["input_ids"]
    if len(ids) + 1 > window:
        raise DataError(f"window={window} is too short for {where} {answer!r} ({len(ids)} tokens + EOS); "
                        f"raise the window (gen_length)")
    return ids + [eos] * (window - len(ids))


def sample_task_sequences(tokenizer, source: str, n: int, seq_len: int, window: int,
                          seed: int = 0) -> torch.Tensor:
    """(n, seq_len) calibration sequences of a task source (builtin:tasks[:SPLIT] / builtin:longtasks[:SPLIT],
    default split probe) whose LAST `window` positions are one example's answer window (answer + EOS fill),
    preceded by that example's prompt and, further left, earlier examples as "prompt answer" text lines.

    So the Stage I prior, which docs/method.md §4 places on the last L positions of a calibration sequence, lands
    on real answer positions, and the rest of the sequence is fully observed in-distribution text.
    Deterministic in `seed`; every example comes from the source's split (never heldout unless asked)."""
    from faircalib.data.tasks import sample_tasks

    fams = families_of(source)
    if fams is None:
        raise DataError(f"task-aligned calibration needs a task source (builtin:tasks[:SPLIT] or "
                        f"builtin:longtasks[:SPLIT]); got {source!r}")
    if n < 1 or seq_len <= window:
        raise DataError(f"task calibration needs n >= 1 and seq_len > window (got n={n}, seq_len={seq_len}, "
                        f"window={window})")
    parts = source.split(":")
    split = parts[2] if len(parts) > 2 else "probe"
    # enough examples for n rows: each row needs about seq_len / (example length) of them
    pool = sample_tasks(n * max(2, seq_len // window + 2), split, seed, fams)
    rng = random.Random(f"task-seq|{seed}")
    nl = tokenizer("\n", add_special_tokens=False)["input_ids"]
    rows = []
    cursor = 0
    for _ in range(n):
        last = pool[cursor % len(pool)]
        cursor += 1
        tail = tokenizer(last.prompt, add_special_tokens=False)["input_ids"] + \
            answer_window_ids(tokenizer, last.answer, window, f"the {last.family} answer")
        ids = list(tail)
        while len(ids) < seq_len:  # earlier examples, newest nearest the tail
            ex = pool[rng.randrange(len(pool))]
            ids = tokenizer(f"{ex.prompt} {ex.answer}", add_special_tokens=False)["input_ids"] + nl + ids
        rows.append(ids[len(ids) - seq_len:])
    return torch.tensor(rows, dtype=torch.long)  # (n, seq_len)
