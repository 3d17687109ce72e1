"""The shipped zoo models: load by name, match their cards, respect the size and architecture
constraints, keep Dream's shifted-logit convention, and reproduce the card's decoded predictions."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from faircalib.data import FAMILIES, TaskExample
from faircalib.eval.exact_match import evaluate_exact_match
from faircalib.models import decoding_defaults, load_dllm, model_card, zoo_names, zoo_path
from faircalib.training.batches import collate_sft, encode_task

NAMES = ["tiny-llada", "tiny-dream"]


@pytest.fixture(scope="module", params=NAMES)
def zoo(request):
    return request.param, load_dllm(f"zoo:{request.param}")


def test_both_models_are_shipped():
    assert set(NAMES) <= set(zoo_names())


def test_loads_by_name_and_matches_its_card(zoo):
    name, m = zoo
    card = model_card(name)
    assert m.model.num_parameters() == card["parameters"]
    assert m.config.arch == card["architecture"] == ("llada" if name == "tiny-llada" else "dream")
    assert m.tokenizer is not None and len(m.tokenizer) == m.config.vocab_size == card["tokenizer"]["vocab_size"]
    assert (m.tokenizer.pad_token_id, m.tokenizer.eos_token_id) == (m.config.pad_token_id, m.config.eos_token_id)
    assert m.tokenizer.mask_token_id == m.config.mask_token_id
    assert decoding_defaults(f"zoo:{name}", required=True) == card["decoding"]
    assert card["decoding"]["policy"] == m.default_policy
    em = card["heldout_exact_match"]
    assert set(em["per_family"]) == set(FAMILIES) and min(em["n_per_family"].values()) >= 100
    assert em["mean"] == pytest.approx(sum(em["per_family"].values()) / len(FAMILIES), abs=1e-4)
    assert card["heldout_masked_nll"]["nll"] > 0 and card["steps"] > 0 and card["tokens_seen"] > 0


def test_directory_size_and_architecture_constraints(zoo):
    name, m = zoo
    size = sum(p.stat().st_size for p in zoo_path(name).iterdir() if p.is_file())
    assert size <= 20 * 2**20
    cfg = m.config
    assert cfg.d_model & (cfg.d_model - 1) == 0  # power of two (Hadamard transforms)
    if name == "tiny-llada":
        assert cfg.n_kv_heads == cfg.n_heads
    else:
        assert cfg.n_kv_heads < cfg.n_heads and cfg.qkv_bias
        pow2 = lambda n: n & (n - 1) == 0  # noqa: E731
        assert not pow2(cfg.d_ff) and not (cfg.d_ff % 3 == 0 and pow2(cfg.d_ff // 3))


def _raw_logits(model, ids, att):
    """Head on the un-realigned hidden states: the checkpoint's own (raw) logits. (B, T, V)"""
    ctx = model.context(ids.shape[1], att)
    h = model.embed(ids)
    for block in model.blocks:
        h = block(h, ctx)
    return model.head(h)


@torch.no_grad()
def test_raw_logits_follow_each_familys_convention(zoo):
    """Dream: raw logit position i-1 predicts token i (official shifted convention); LLaDA: position i."""
    name, m = zoo
    exs = [TaskExample("sort", "sort 5 2 8 1", "1 2 5 8"), TaskExample("arith", "12+30=?", "42"),
           TaskExample("kv", "a=4 b=9 c=1 ; b?", "9"), TaskExample("reverse", "reverse p q r s", "s r q p")]
    b = collate_sft([encode_task(m.tokenizer, e, 16) for e in exs], m.tokenizer.pad_token_id)
    ids, ws = b.input_ids.clone(), b.window_start
    masked = torch.zeros_like(ids, dtype=torch.bool)
    masked[:, ws + 1::2] = True  # every other answer-window position
    ids[masked] = m.mask_token_id
    raw = _raw_logits(m.model, ids, b.attention_mask)  # (B, T, V)
    rows, cols = masked.nonzero(as_tuple=True)
    truth = b.input_ids[rows, cols]
    nll_prev = F.cross_entropy(raw[rows, cols - 1], truth)
    nll_same = F.cross_entropy(raw[rows, cols], truth)
    if m.config.logits_shifted:
        assert nll_prev < 0.5 and nll_same > nll_prev + 2.0, (float(nll_prev), float(nll_same))
    else:
        assert nll_same < 0.5 and nll_prev > nll_same + 2.0, (float(nll_prev), float(nll_same))
    aligned = m.model(ids, attention_mask=b.attention_mask)
    shift = 1 if m.config.logits_shifted else 0
    assert torch.allclose(aligned[:, ws:], raw[:, ws - shift:raw.shape[1] - shift], atol=1e-5)


def test_decoding_reproduces_the_cards_predictions(zoo):
    name, m = zoo
    card = model_card(name)
    shown = card["heldout_exact_match"]["examples"]
    exs = [TaskExample(s["family"], s["question"], s["answer"]) for s in shown]
    res = evaluate_exact_match(m.model, m.tokenizer, exs, decoding_defaults(f"zoo:{name}"))
    assert [s["prediction"] for s in res["examples"]] == [s["prediction"] for s in shown]
    assert json.loads(json.dumps(res["decoding"]))["policy"] == card["decoding"]["policy"]
