"""evaluate_exact_match: per-family accounting through the real decoding engine, with an oracle model
whose answers are known (right for some families, wrong for others)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from faircalib.data import TaskExample, sample_tasks
from faircalib.errors import ConfigError
from faircalib.eval.exact_match import evaluate_exact_match


class OracleModel(nn.Module):
    """DiffusionLM-shaped stub: for a prompt in `table` it puts all mass on the stored window tokens;
    for any other prompt it predicts EOS everywhere (an empty answer)."""

    def __init__(self, table: dict[tuple[int, ...], list[int]], vocab: int, mask_id: int, eos_id: int,
                 policy: str):
        super().__init__()
        self.table, self.vocab, self.eos = table, vocab, eos_id
        self.mask_token_id = mask_id
        self.default_policy = policy
        self.config = type("Cfg", (), {"pad_token_id": 0})()
        self.anchor = nn.Parameter(torch.zeros(()))
        self.calls = 0

    def forward(self, ids, attention_mask=None, window=None):
        self.calls += 1
        start, end = window
        out = torch.full((ids.shape[0], end - start, self.vocab), -10.0)
        for r in range(ids.shape[0]):
            keep = attention_mask[r, :start].bool() if attention_mask is not None else slice(None)
            target = self.table.get(tuple(ids[r, :start][keep].tolist()), [self.eos] * (end - start))
            out[r, torch.arange(end - start), torch.tensor(target)] = 10.0
        return out


def _window(tok, answer: str, L: int) -> list[int]:
    ids = tok(" " + answer, add_special_tokens=False)["input_ids"]
    return ids + [tok.eos_token_id] * (L - len(ids))


@pytest.mark.parametrize("policy,decoding", [
    ("low_confidence", {"steps": 8, "gen_length": 16, "block_length": 8}),
    ("entropy", {"policy": "entropy", "steps": 16, "gen_length": 16}),
])
def test_per_family_accuracy_through_the_engine(byte_tokenizer, policy, decoding):
    tok = byte_tokenizer
    exs = [e for e in sample_tasks(40, "heldout", seed=3) if e.family in ("arith", "kv", "sort", "word")]
    table = {}
    for e in exs:
        prompt = tuple(tok(e.prompt, add_special_tokens=False)["input_ids"])
        if e.family in ("arith", "kv"):
            table[prompt] = _window(tok, e.answer, 16)
        elif e.family == "sort":  # a wrong answer: descending order
            table[prompt] = _window(tok, " ".join(sorted(e.answer.split(), reverse=True)) + " x", 16)
        # word: not in the table -> the oracle answers "" (all EOS)
    model = OracleModel(table, len(tok), tok.mask_token_id, tok.eos_token_id, policy)
    res = evaluate_exact_match(model, tok, exs, decoding, batch_size=7)
    assert res["per_family"] == {"arith": 1.0, "word": 0.0, "sort": 0.0, "kv": 1.0}
    assert res["mean"] == 0.5 and res["n"] == len(exs) == sum(res["n_per_family"].values())
    assert res["decoding"]["policy"] == policy
    assert model.calls == -(-len(exs) // 7) * decoding["steps"]  # one forward per step per batch
    for shown in res["examples"]:
        right = shown["family"] in ("arith", "kv")
        assert shown["correct"] is right and (shown["prediction"].strip() == shown["answer"]) is right
    assert any(ex["family"] == "word" and ex["prediction"] == "" and not ex["correct"] for ex in res["examples"])


def test_bad_inputs_are_refused(byte_tokenizer):
    model = OracleModel({}, len(byte_tokenizer), byte_tokenizer.mask_token_id, 1, "low_confidence")
    with pytest.raises(ConfigError):
        evaluate_exact_match(model, byte_tokenizer, [], {"steps": 4, "gen_length": 4})
    with pytest.raises(ConfigError, match="unknown field"):
        evaluate_exact_match(model, byte_tokenizer, [TaskExample("kv", "a=1 ; a?", "1")], {"stepz": 4})
