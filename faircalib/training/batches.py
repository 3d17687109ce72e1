"""Training batches for the zoo models: SFT-style task examples and text windows.

Boundary: turns `faircalib.data` (train split only) into token tensors; knows nothing about models
or losses.

SFT layout (as LLaDA's SFT): `[prompt tokens | answer tokens, EOS, EOS, ... ]` where the answer window
has a fixed length `gen_length` (the same window the decoder fills at inference) and is padded with
EOS so the model learns to stop. Prompts of different lengths are **left**-padded with PAD and an
attention mask (exact for RoPE models), so the answer window is always the last `gen_length`
positions of the batch.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from faircalib.data import FAMILIES, TaskExample, answer_window_ids, sample_tasks, tokenize_stream
from faircalib.errors import ConfigError, DataError


@dataclass(frozen=True)
class EncodedTask:
    family: str
    prompt_ids: tuple[int, ...]
    window_ids: tuple[int, ...]  # answer tokens then EOS fill, exactly gen_length long
    answer_len: int  # answer tokens before the first EOS


def encode_task(tokenizer, ex: TaskExample, gen_length: int) -> EncodedTask:
    """Prompt ids and the EOS-filled answer window. The answer is written as " ANSWER" (the text
    continuation after "A:"), which tokenizes identically to the tail of `prompt + " " + answer`."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise DataError("the tokenizer has no eos token; SFT windows are EOS-padded (train one with "
                        "faircalib.training.tokenizer)")
    prompt = tokenizer(ex.prompt, add_special_tokens=False)["input_ids"]
    try:
        window = answer_window_ids(tokenizer, ex.answer, gen_length, f"the {ex.family} answer")
    except DataError as e:  # the window is a training setting: name it as one
        raise ConfigError(str(e).replace("window=", "gen_length=")) from e
    answer = window[:window.index(eos)]
    return EncodedTask(ex.family, tuple(prompt), tuple(window), len(answer))


@dataclass
class SFTBatch:
    input_ids: torch.Tensor  # (B, T) clean tokens, left-padded
    attention_mask: torch.Tensor  # (B, T) 1 = real token
    window_start: int  # answer window = positions window_start .. T-1 for every row


def collate_sft(items: list[EncodedTask], pad_id: int) -> SFTBatch:
    """Left-pad prompts so every answer window ends the row. -> (B, T) tensors."""
    gen_length = len(items[0].window_ids)
    width = max(len(it.prompt_ids) for it in items)
    T = width + gen_length
    ids = torch.full((len(items), T), pad_id, dtype=torch.long)
    att = torch.zeros((len(items), T), dtype=torch.long)
    for r, it in enumerate(items):
        row = list(it.prompt_ids) + list(it.window_ids)
        ids[r, T - len(row):] = torch.tensor(row, dtype=torch.long)
        att[r, T - len(row):] = 1
    return SFTBatch(ids, att, width)


class TaskSampler:
    """Endless, seeded stream of encoded **train-split** task examples.

    Each family has a fixed pool (`pool_per_family` distinct examples, fewer for `arith` whose train
    split has only ~12k distinct questions) that is reshuffled after each pass; examples are drawn
    family-by-weight so every batch mixes the families.
    """

    def __init__(self, tokenizer, gen_length: int, seed: int, pool_per_family: int = 40000,
                 families: tuple[str, ...] = FAMILIES, family_weights: dict[str, float] | None = None):
        self.rng = random.Random(f"sft|{seed}")
        caps = {"arith": 10000}
        self.pools: dict[str, list[EncodedTask]] = {}
        for fam in families:
            exs = sample_tasks(min(pool_per_family, caps.get(fam, pool_per_family)), "train", seed, (fam,))
            self.pools[fam] = [encode_task(tokenizer, ex, gen_length) for ex in exs]
        self.families = list(families)
        w = family_weights or {}
        self.weights = [float(w.get(f, 1.0)) for f in self.families]
        self._order = {f: [] for f in families}

    def _next(self, fam: str) -> EncodedTask:
        if not self._order[fam]:
            self._order[fam] = list(range(len(self.pools[fam])))
            self.rng.shuffle(self._order[fam])
        return self.pools[fam][self._order[fam].pop()]

    def sample(self, n: int) -> list[EncodedTask]:
        fams = self.rng.choices(self.families, weights=self.weights, k=n)
        return [self._next(f) for f in fams]


def check_train_source(source: str) -> None:
    """Built-in sources must name their train split explicitly (builtin:kjv alone includes heldout text)."""
    if source.startswith("builtin:") and not source.endswith(":train"):
        raise ConfigError(f"training text source {source!r} must be a train split, e.g. builtin:kjv:train or "
                          f"builtin:mix:train; probe/heldout data is for evaluation only")


class TextSampler:
    """Uniform random windows of a tokenized text source (e.g. builtin:kjv:train), seeded."""

    def __init__(self, tokenizer, source: str, seed: int, max_tokens: int = 2_000_000):
        check_train_source(source)
        self.stream = tokenize_stream(tokenizer, source, max_tokens=max_tokens, seed=seed)  # (N,)
        self.gen = torch.Generator().manual_seed(seed)

    def sample(self, n: int, seq_len: int) -> torch.Tensor:
        """-> (n, seq_len) LongTensor."""
        if self.stream.numel() <= seq_len:
            raise DataError(f"text stream has {self.stream.numel()} tokens; need more than seq_len={seq_len}")
        starts = torch.randint(0, self.stream.numel() - seq_len, (n,), generator=self.gen)
        offsets = torch.arange(seq_len)
        return self.stream[starts[:, None] + offsets[None, :]]  # (n, seq_len)
