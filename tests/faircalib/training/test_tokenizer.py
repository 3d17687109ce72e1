"""The zoo tokenizer: specials at fixed ids, single-digit tokens, lossless round trip, prompt/answer
concatenation consistency, and loading back through AutoTokenizer."""
from __future__ import annotations

import pytest

from faircalib.data import FAMILIES, sample_tasks
from faircalib.errors import ConfigError
from faircalib.models import load_tokenizer
from faircalib.training.tokenizer import EOS, MASK, PAD, special_ids, train_bpe_tokenizer


def test_special_tokens_have_fixed_ids(small_tokenizer):
    assert special_ids(small_tokenizer) == {"pad": 0, "eos": 1, "mask": 2}
    assert small_tokenizer.convert_ids_to_tokens([0, 1, 2]) == [PAD, EOS, MASK]
    assert len(small_tokenizer) == 320


def test_digits_are_single_tokens(small_tokenizer):
    ids = small_tokenizer("12+345=357", add_special_tokens=False)["input_ids"]
    assert small_tokenizer.convert_ids_to_tokens(ids) == ["1", "2", "+", "3", "4", "5", "=", "3", "5", "7"]
    # no merge anywhere in the vocabulary contains a digit next to anything else
    for token in small_tokenizer.get_vocab():
        if any(c.isdigit() for c in token):
            assert len(token) == 1, token


@pytest.mark.parametrize("text", ["In the beginning God created the heaven and the earth.",
                                  "Q: 47+38=?\nA: 85", "  two  spaces\tand tab", "naïve café — 3½ ✓"])
def test_round_trip_is_lossless(small_tokenizer, text):
    ids = small_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert small_tokenizer.decode(ids) == text


def test_prompt_then_answer_tokenizes_like_the_whole_line(small_tokenizer):
    """Training encodes prompt and " answer" separately; that must equal tokenizing the whole line."""
    for ex in sample_tasks(50, "train", seed=1):
        whole = small_tokenizer(f"{ex.prompt} {ex.answer}", add_special_tokens=False)["input_ids"]
        parts = (small_tokenizer(ex.prompt, add_special_tokens=False)["input_ids"]
                 + small_tokenizer(" " + ex.answer, add_special_tokens=False)["input_ids"])
        assert parts == whole, ex
    assert {ex.family for ex in sample_tasks(50, "train", seed=1)} == set(FAMILIES)


def test_saved_tokenizer_loads_without_remote_code(small_tokenizer, tmp_path):
    small_tokenizer.save_pretrained(str(tmp_path))
    tok = load_tokenizer(tmp_path)
    assert (tok.pad_token_id, tok.eos_token_id, tok.mask_token_id) == (0, 1, 2)
    text = "Q: sort 3 1 2\nA: 1 2 3"
    assert tok(text, add_special_tokens=False)["input_ids"] == small_tokenizer(text, add_special_tokens=False)[
        "input_ids"]


def test_vocab_below_byte_alphabet_is_refused():
    with pytest.raises(ConfigError, match="vocab_size=100"):
        train_bpe_tokenizer(["abc"], vocab_size=100)
