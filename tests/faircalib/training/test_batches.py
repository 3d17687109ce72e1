"""SFT encoding (EOS-filled answer window), left-padded collation, train-only data sources."""
from __future__ import annotations

import pytest
import torch

from faircalib.data import FAMILIES, TaskExample, split_of
from faircalib.errors import ConfigError
from faircalib.training.batches import TaskSampler, TextSampler, check_train_source, collate_sft, encode_task


def test_answer_window_is_answer_then_eos_fill(small_tokenizer):
    ex = TaskExample("sort", "sort 3 1 2", "1 2 3")
    enc = encode_task(small_tokenizer, ex, gen_length=10)
    answer = small_tokenizer(" 1 2 3", add_special_tokens=False)["input_ids"]
    assert enc.answer_len == len(answer) == 6  # "Ġ","1","Ġ","2","Ġ","3"
    assert list(enc.window_ids) == answer + [1] * 4
    assert list(enc.prompt_ids) == small_tokenizer("Q: sort 3 1 2\nA:", add_special_tokens=False)["input_ids"]


def test_answer_longer_than_window_is_refused(small_tokenizer):
    with pytest.raises(ConfigError, match="gen_length=4"):
        encode_task(small_tokenizer, TaskExample("sort", "sort 3 1 2", "1 2 3"), gen_length=4)


def test_collate_left_pads_so_windows_end_every_row(small_tokenizer):
    items = [encode_task(small_tokenizer, TaskExample("arith", "1+2=?", "3"), 4),
             encode_task(small_tokenizer, TaskExample("kv", "a=1 b=2 ; b?", "2"), 4)]
    b = collate_sft(items, pad_id=0)
    P0, P1 = len(items[0].prompt_ids), len(items[1].prompt_ids)
    assert P1 > P0 and b.window_start == P1 and b.input_ids.shape == (2, P1 + 4)
    assert b.attention_mask[0].tolist() == [0] * (P1 - P0) + [1] * (P0 + 4)
    assert b.input_ids[0, : P1 - P0].tolist() == [0] * (P1 - P0)
    assert b.input_ids[:, b.window_start:].tolist() == [list(items[0].window_ids), list(items[1].window_ids)]


def test_task_sampler_draws_train_split_only_and_is_seeded(small_tokenizer):
    s1 = TaskSampler(small_tokenizer, 16, seed=3, pool_per_family=50)
    for fam, pool in s1.pools.items():
        assert len(pool) == 50 and all(p.family == fam for p in pool)
    draw1 = s1.sample(200)
    draw2 = TaskSampler(small_tokenizer, 16, seed=3, pool_per_family=50).sample(200)
    assert draw1 == draw2
    assert {d.family for d in draw1} == set(FAMILIES)
    # the pools are built from sample_tasks(split="train"): decode and re-check the split of a few
    for d in draw1[:20]:
        prompt = small_tokenizer.decode(list(d.prompt_ids))
        assert split_of(d.family, prompt.removeprefix("Q: ").removesuffix("\nA:")) == "train"


@pytest.mark.parametrize("source", ["builtin:kjv", "builtin:kjv:heldout", "builtin:mix:probe", "builtin:tasks"])
def test_evaluation_splits_are_refused_as_training_text(source):
    with pytest.raises(ConfigError, match="train split"):
        check_train_source(source)


def test_text_sampler_windows_come_from_the_stream(small_tokenizer):
    ts = TextSampler(small_tokenizer, "builtin:kjv:train", seed=0, max_tokens=3000)
    x = ts.sample(4, 32)  # (4, 32)
    assert x.shape == (4, 32)
    stream = ts.stream.tolist()
    for row in x.tolist():
        starts = [i for i in range(len(stream) - 31) if stream[i:i + 32] == row]
        assert starts, "window not found in the stream"
    assert not torch.equal(x[0], x[1])
