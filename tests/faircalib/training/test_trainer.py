"""The training loop: loss goes down on a tiny config, runs are reproducible by seed, the schedule and
the config validation behave."""
from __future__ import annotations

import pytest
import torch

from faircalib.errors import ConfigError
from faircalib.training.trainer import TrainConfig, lr_at, train

from .conftest import make_tiny

FAST = dict(sft_batch=16, text_batch=2, text_len=32, text_tokens=4000, pool_per_family=100, lr=3e-3,
            warmup_steps=5, log_every=5, probe_every=0, bf16_autocast=False)


def test_loss_decreases_within_a_few_dozen_steps(small_tokenizer):
    model = make_tiny("llada", small_tokenizer)
    res = train(model, small_tokenizer, TrainConfig(steps=40, **FAST), log=lambda s: None)
    first, last = res.history[0], res.history[-1]
    assert res.steps == 40 and last["step"] == 40
    assert last["sft_ce"] < first["sft_ce"] - 1.0, (first, last)  # ~5.5 -> ~3 nats on the answer windows
    assert last["text_ce"] < first["text_ce"]
    assert res.tokens_seen > 40 * (16 * 20 + 2 * 32)
    assert not model.training


def test_same_seed_same_weights_other_seed_differs(small_tokenizer):
    def run(seed):
        model = make_tiny("dream", small_tokenizer, seed=0)
        train(model, small_tokenizer, TrainConfig(steps=4, seed=seed, **FAST), log=lambda s: None)
        return model.state_dict()

    a, b, c = run(1), run(1), run(2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_bf16_autocast_and_unweighted_sft_also_learn(small_tokenizer):
    model = make_tiny("llada", small_tokenizer)
    res = train(model, small_tokenizer, TrainConfig(steps=20, sft_weighting="none",
                                                    **{**FAST, "bf16_autocast": True}), log=lambda s: None)
    assert res.history[-1]["sft_ce"] < res.history[0]["sft_ce"] - 0.5
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay fp32


def test_schedule_warms_up_then_follows_the_cosine():
    cfg = TrainConfig(steps=100, lr=1e-3, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(0, 0.0, cfg) == pytest.approx(1e-4)
    assert lr_at(9, 0.0, cfg) == pytest.approx(1e-3)
    assert lr_at(10, 0.0, cfg) == pytest.approx(1e-3)
    assert lr_at(50, 0.5, cfg) == pytest.approx(1e-4 + 0.9e-3 * 0.5)
    assert lr_at(99, 1.0, cfg) == pytest.approx(1e-4)


@pytest.mark.parametrize("bad,match", [({"steps": 0, "minutes": 0}, "budget"), ({"steps": 1, "lr": 2.0}, "lr="),
                                       ({"steps": 1, "family_weights": {"math": 2.0}}, "family_weights"),
                                       ({"steps": 1, "text_source": "builtin:kjv:heldout"}, "train split"),
                                       ({"steps": 1, "gen_length": 0}, "gen_length"),
                                       ({"steps": 1, "sft_weighting": "sqrt"}, "sft_weighting")])
def test_config_is_validated(bad, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**bad)


def test_progress_events_every_step(small_tokenizer):
    model = make_tiny("llada", small_tokenizer)
    events: list[dict] = []
    train(model, small_tokenizer, TrainConfig(steps=3, **FAST), log=lambda s: None, progress=events.append)
    assert [(e["event"], e["step"], e["total"]) for e in events] == [("train_step", s, 3) for s in (1, 2, 3)]
    assert all(e["budget_s"] is None and e["loss"] > 0 for e in events)
    assert events[0]["elapsed_s"] <= events[-1]["elapsed_s"]


def test_bf16_autocast_on_a_cpu_that_emulates_bf16_is_warned_about(small_tokenizer, monkeypatch):
    import faircalib.training.trainer as trainer

    lines = []
    monkeypatch.setattr(trainer, "cpu_bf16_slowdown", lambda: 24.0)
    model = make_tiny("llada", small_tokenizer)
    train(model, small_tokenizer, TrainConfig(steps=1, **{**FAST, "bf16_autocast": True}), log=lines.append)
    assert any("24x slower than float32" in s for s in lines), lines
    lines.clear()
    train(model, small_tokenizer, TrainConfig(steps=1, **FAST), log=lines.append)  # float32: nothing to say
    assert not any("slower than float32" in s for s in lines)
