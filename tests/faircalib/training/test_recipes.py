"""train_zoo_model end to end on a few steps: from scratch, then a warm-restart continuation (--init-from)."""
from __future__ import annotations

import json

import pytest

from faircalib.errors import ConfigError
from faircalib.models import load_dllm
from faircalib.training.recipes import TRAINING_FILE, train_zoo_model

FAST = {"sft_batch": 4, "text_batch": 1, "probe_every": 0, "checkpoint_every": 0, "log_every": 1}


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    out = tmp_path_factory.mktemp("stage1")
    train_zoo_model("tiny-llada", out, steps=2, threads=1, log=lambda m: None, **FAST)
    return out


def test_from_scratch_records_a_reproducible_command(stage1):
    rec = json.loads((stage1 / TRAINING_FILE).read_text())
    assert rec["steps"] == 2 and rec["seed"] == 0 and "stages" not in rec
    assert rec["reproduce"] == "faircalib zoo train tiny-llada --steps 2 --seed 0 --threads 1"


def test_continuation_starts_from_the_previous_weights_and_records_every_stage(stage1, tmp_path):
    before = load_dllm(stage1).model.state_dict()
    out = tmp_path / "stage2"
    train_zoo_model("tiny-llada", out, steps=3, threads=1, log=lambda m: None, init_from=stage1, **FAST)
    rec = json.loads((out / TRAINING_FILE).read_text())
    assert [s["steps"] for s in rec["stages"]] == [2, 3] and rec["steps"] == 5
    assert [s["seed"] for s in rec["stages"]] == [0, 1]  # data order and masks do not repeat stage 1's
    assert rec["reproduce"].count("faircalib zoo train") == 2 and rec["reproduce"].endswith("--init-from "
                                                                                            "DIR_OF_PREVIOUS_STAGE")
    assert (out / "training_log.stage1.jsonl").is_file() and (out / "training_log.jsonl").is_file()
    after = load_dllm(out).model.state_dict()
    # 3 small AdamW steps from stage 1's weights: close to them (a fresh init would be far) but not equal
    diffs = [float((after[k] - before[k]).abs().max()) for k in before]
    assert 0 < max(diffs) < 0.05
    fresh = load_dllm(stage1).model.init_weights(123).state_dict()
    assert max(float((fresh[k] - before[k]).abs().max()) for k in before) > 0.05


def test_continuation_rejects_another_recipes_directory(stage1, tmp_path):
    with pytest.raises(ConfigError, match="tiny-llada"):
        train_zoo_model("tiny-dream", tmp_path / "x", steps=1, log=lambda m: None, init_from=stage1, **FAST)
    with pytest.raises(ConfigError, match="training.json"):
        train_zoo_model("tiny-llada", tmp_path / "y", steps=1, log=lambda m: None, init_from=tmp_path, **FAST)


def test_long_recipes_warm_start_from_the_tiny_model_of_their_architecture(tmp_path):
    tiny = load_dllm("zoo:tiny-llada").model.state_dict()
    out = tmp_path / "long"
    train_zoo_model("long-llada", out, steps=1, threads=1, log=lambda m: None, **FAST)
    rec = json.loads((out / TRAINING_FILE).read_text())
    assert rec["warm_start"]["from"] == "zoo:tiny-llada" and rec["warm_start"]["steps"] == 9000
    assert rec["train_config"]["families"] == ["dsort", "lsort", "lrev"] and rec["train_config"]["gen_length"] == 48
    after = load_dllm(out).model.state_dict()
    diffs = [float((after[k] - tiny[k]).abs().max()) for k in tiny]
    assert 0 < max(diffs) < 0.01  # one small AdamW step away from the tiny model's weights


def test_warm_start_with_another_architecture_is_a_one_line_error():
    from dataclasses import replace

    from faircalib.training.recipes import _warm_start, get_recipe

    with pytest.raises(ConfigError, match=r"warm start zoo:tiny-dream has arch=dream.*fix warm_start"):
        _warm_start(replace(get_recipe("long-llada"), warm_start="tiny-dream"))
