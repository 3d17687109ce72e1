"""Decoding defaults from the model (faircalib.models.model_decoding) and the probe settings derived
from them: zoo model cards, a directory's own card, a quantized checkpoint's meta, and the LLaDA /
Dream families' documented defaults (with a directory's generation_config.json on top)."""
from __future__ import annotations

import json

import pytest

from faircalib.errors import ModelLoadError
from faircalib.models import FAMILY_DECODING, model_card, model_decoding, save_model_dir, tiny_model
from faircalib.probe import PAPER_SCALE, ProbeConfig


@pytest.mark.parametrize("name", ["zoo:tiny-llada", "zoo:tiny-dream"])
def test_zoo_models_default_to_their_model_card(name):
    card = model_card(name)["decoding"]
    d = model_decoding(name)
    assert d.values == card and d.recorded and d.origin == f"model card of {name}"
    probe = ProbeConfig.for_decoding(d.values)
    # the zoo models decode 16 tokens in 16 steps: Stage I probes exactly that, not the paper's 256 / 256
    assert (probe.steps, probe.window) == (card["steps"], card["gen_length"]) == (16, 16)
    assert probe.block_length is None  # the card's block (16) is the whole window
    assert "steps=16 gen_length=16" in d.describe() and name in d.describe()


def test_family_defaults_for_plain_directories(tmp_path):
    llada = save_model_dir(tiny_model("llada"), tmp_path / "llada")
    dream = save_model_dir(tiny_model("dream"), tmp_path / "dream")
    dl, dd = model_decoding(llada), model_decoding(dream)
    # LLaDA (ML-GSAI/LLaDA generate.py defaults): steps = gen_length = 128, one block, low_confidence, greedy
    assert dl.values == {"policy": "low_confidence", "steps": 128, "gen_length": 128, "temperature": 0.0}
    assert not dl.recorded and "LLaDA family" in dl.origin
    # Dream (README demo): 512 / 512, entropy, temperature 0.2, top_p 0.95, and the top_k 50 that the
    # reference decode gets from transformers' generation defaults; every value reaches DecodeConfig
    assert dd.values == {"policy": "entropy", "steps": 512, "gen_length": 512, "temperature": 0.2, "alg_temp": 0.0,
                         "top_p": 0.95, "top_k": 50}
    assert dd.unsupported == {} and "not applied" not in dd.describe() and "top_k=50" in dd.describe()
    assert FAMILY_DECODING["dream"]["top_p"] == 0.95
    p = ProbeConfig.for_decoding(dl.values, n_samples=8)
    assert (p.steps, p.window, p.block_length, p.n_samples) == (128, 128, None, 8)


def test_generation_config_overrides_the_family_defaults(tmp_path):
    dream = save_model_dir(tiny_model("dream"), tmp_path / "dream")
    # what Dream-v0-Instruct-7B ships: random-order transfer ("origin"), 512 steps, greedy tokens, no top_p
    (dream / "generation_config.json").write_text(json.dumps(
        {"alg": "origin", "steps": 256, "temperature": 0.0, "top_p": None, "alg_temp": None, "eps": 0.001,
         "max_new_tokens": 128, "bos_token_id": 1}))
    d = model_decoding(dream)
    # explicit nulls unset the family's values (top_p, alg_temp -> DecodeConfig's own default)
    assert d.values == {"policy": "origin", "steps": 256, "gen_length": 128, "temperature": 0.0, "eps": 0.001,
                        "top_k": 50}  # the file does not set top_k
    assert d.unsupported == {} and "generation_config.json" in d.origin


def test_card_and_checkpoint_meta_win_over_the_family(tmp_path):
    path = save_model_dir(tiny_model("llada"), tmp_path / "m")
    (path / "model_card.json").write_text(json.dumps({"decoding": {"steps": 8, "gen_length": 8, "block_length": 4}}))
    d = model_decoding(path)
    assert d.values == {"steps": 8, "gen_length": 8, "block_length": 4} and d.recorded
    p = ProbeConfig.for_decoding(d.values)
    assert (p.steps, p.window, p.block_length) == (8, 8, 4)
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "quant_config.json").write_text(json.dumps({"meta": {"source": "zoo:tiny-dream"}}))
    assert model_decoding(ck).values == model_card("zoo:tiny-dream")["decoding"]
    (ck / "quant_config.json").write_text(json.dumps({"meta": {"decoding": {"steps": 4, "gen_length": 4}}}))
    assert model_decoding(ck).values == {"steps": 4, "gen_length": 4}
    with pytest.raises(ModelLoadError, match="no config.json"):
        model_decoding(tmp_path / "nothing-here")


def test_paper_scale_is_explicit():
    from faircalib.probe import probe_defaults

    assert probe_defaults("zoo:tiny-llada")[0].steps == 16  # the default: the model's own decoding
    cfg, origin = probe_defaults("zoo:tiny-llada", paper_scale=True)
    assert (cfg.n_samples, cfg.steps, cfg.window, origin) == (512, 256, 256, "paper scale")
    cfg, origin = probe_defaults(None, arch="dream", n_samples=8)  # a model object without a directory
    assert (cfg.steps, cfg.window, cfg.n_samples, origin) == (512, 512, 8, "Dream family defaults (Dream README demo)")
    assert ProbeConfig.paper_scale() == ProbeConfig(n_samples=512, steps=256, window=256)
    assert PAPER_SCALE == {"n_samples": 512, "steps": 256, "window": 256, "block_length": None}
    assert ProbeConfig.paper_scale(n_samples=64).n_samples == 64
