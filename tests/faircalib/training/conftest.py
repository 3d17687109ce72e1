"""Fixtures for the training tests: a small tokenizer of the zoo kind and a tiny model built on it."""
from __future__ import annotations

import pytest

from faircalib.data import kjv_split, sample_tasks
from faircalib.models import DLLMConfig, build_model
from faircalib.training.tokenizer import special_ids, train_bpe_tokenizer


@pytest.fixture(scope="session")
def small_tokenizer():
    """Byte-level BPE (vocab 320) trained on 500 train task lines and 5 KJV train chapters."""
    texts = [f"{ex.prompt} {ex.answer}" for ex in sample_tasks(500, "train", seed=7)] + kjv_split("train")[:5]
    return train_bpe_tokenizer(texts, vocab_size=320)


def make_tiny(arch: str, tokenizer, seed: int = 0, **overrides):
    ids = special_ids(tokenizer)
    fields = dict(arch=arch, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2 if arch == "dream" else 4,
                  d_ff=128, vocab_size=len(tokenizer), mask_token_id=ids["mask"], qkv_bias=arch == "dream",
                  pad_token_id=ids["pad"], eos_token_id=ids["eos"], max_seq_len=256)
    fields.update(overrides)
    return build_model(DLLMConfig(**fields)).init_weights(seed)
