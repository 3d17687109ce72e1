"""Fixtures for the Stage I driver tests: a tiny model whose vocabulary matches the session byte tokenizer."""
from __future__ import annotations

import pytest

from faircalib.models import tiny_model


@pytest.fixture
def make_model(byte_tokenizer):
    def make(arch: str = "llada", seed: int = 0):
        tok = byte_tokenizer
        return tiny_model(arch, seed=seed, vocab_size=len(tok), mask_token_id=tok.mask_token_id,
                          pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    return make


@pytest.fixture
def prompts():
    return ["Q: 12+34=?\nA:", "In the beginning", "Q: sort 3 1 2\nA:", "God created", "the heaven and the earth",
            "Q: 9-4=?\nA:", "And the earth was", "Q: reverse a b c\nA:", "light", "Q: 1+1=?\nA:"]


