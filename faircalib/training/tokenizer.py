"""Offline tokenizer for the zoo models: a byte-level BPE trained with `tokenizers` on training text.

Digits are always split into single-digit tokens (the pre-tokenizer isolates every digit before BPE
merges are applied), so multi-digit arithmetic is a per-digit problem the tiny models can learn.
Special tokens come first, at fixed ids: `<|pad|>` = 0, `<|eos|>` = 1, `<|mask|>` = 2; the mask id is
the model config's `mask_token_id`. The result is a `PreTrainedTokenizerFast` that `save_pretrained`
writes as tokenizer.json + tokenizer_config.json, loadable with `AutoTokenizer` (no remote code).
"""
from __future__ import annotations

from collections.abc import Iterable

from faircalib.errors import ConfigError

PAD, EOS, MASK = "<|pad|>", "<|eos|>", "<|mask|>"
SPECIAL_TOKENS = (PAD, EOS, MASK)  # ids 0, 1, 2
MIN_VOCAB = 256 + len(SPECIAL_TOKENS)  # the byte alphabet plus the specials


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 1024, min_frequency: int = 2):
    """Train a byte-level BPE with single-digit tokens on `texts` -> PreTrainedTokenizerFast.

    Deterministic for a given text sequence (the `tokenizers` BPE trainer breaks ties by content).
    """
    if vocab_size < MIN_VOCAB:
        raise ConfigError(f"vocab_size={vocab_size} is too small; a byte-level BPE needs at least {MIN_VOCAB}")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        pre_tokenizers.Digits(individual_digits=True),  # "Ġ85" -> "Ġ", "8", "5"
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=EOS, mask_token=MASK,
                                   model_max_length=1_000_000, clean_up_tokenization_spaces=False)


def special_ids(tokenizer) -> dict[str, int]:
    """{"pad": id, "eos": id, "mask": id} of a tokenizer made by `train_bpe_tokenizer`."""
    return {"pad": tokenizer.pad_token_id, "eos": tokenizer.eos_token_id,
            "mask": tokenizer.convert_tokens_to_ids(MASK)}
