"""faircalib.quantize_model: the one-call entry point (zoo name / directory / loaded model), its report
and save, defaults from the model, and the errors at its edge."""
from __future__ import annotations

import json

import pytest
import torch

import faircalib
from faircalib.checkpoint import load_quantized
from faircalib.errors import ConfigError
from faircalib.models import load_dllm, tiny_model
from faircalib.quant.runtime import QuantLinear

FAST = {"calibration": {"n": 4, "seq_len": 16, "epochs": 1}, "probe": {"n_samples": 4, "batch_size": 4}}


def test_quantize_model_from_a_directory_saves_a_loadable_checkpoint(tiny_model_dir, tmp_path):
    events: list[dict] = []
    q = faircalib.quantize_model(str(tiny_model_dir), progress=events.append, **FAST)
    assert isinstance(q, faircalib.QuantizedModel)
    assert all(isinstance(b.role(r), QuantLinear) for b in q.model.blocks for r in ("q", "down"))
    rep = q.report
    assert (rep["method"], rep["bits"], rep["source"]) == ("faircalib", "w4a4", str(tiny_model_dir))
    # a plain LLaDA directory: Stage I probes at the LLaDA family's documented T = L = 128 (not 256)
    assert (rep["probe"]["steps"], rep["probe"]["window"], rep["probe"]["n_samples"]) == (128, 128, 4)
    assert "LLaDA family" in rep["probe"]["defaults_from"]
    assert rep["calibration"]["n"] == 4 and rep["calibration"]["epochs"] == 1
    assert len(rep["block_losses"]) == len(q.model.blocks) and rep["probe"]["prior_key"]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "probe_start" and "probe_batch" in kinds and kinds.count("block_done") == len(q.model.blocks)
    assert kinds.count("epoch") == len(q.model.blocks) and kinds[-1] == "done"

    out = q.save(tmp_path / "ckpt")
    loaded = load_quantized(out)
    ids = torch.randint(3, 200, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded.model(ids), q(ids))
    meta = json.loads((out / "quant_config.json").read_text())["meta"]
    assert meta["source"] == str(tiny_model_dir) and meta["method_config"]["probe"]["steps"] == 128
    assert meta["prior"]["cache_key"] == rep["probe"]["prior_key"] and meta["defaults"]["probe"]


def test_quantize_model_takes_a_loaded_model_and_leaves_it_alone(tiny_model_dir):
    m = load_dllm(tiny_model_dir)
    before = {k: v.clone() for k, v in m.model.state_dict().items()}
    q = faircalib.quantize_model(m, method="rtn", bits="w8a8")
    assert q.report["method"] == "rtn" and "probe" not in q.report and q.model is not m.model
    assert isinstance(q.model.blocks[0].role("q"), QuantLinear) and q.model.blocks[0].role("q").w_bits == 8
    assert all(torch.equal(before[k], v) for k, v in m.model.state_dict().items())  # the FP model is untouched
    # a bare DiffusionLM works too (with its tokenizer for data-driven methods); paper scale is explicit
    q2 = faircalib.quantize_model(m.model, tokenizer=m.tokenizer, method="flatquant",
                                  calibration={"n": 2, "seq_len": 8, "epochs": 0})
    assert q2.report["calibration"]["epochs"] == 0
    q3 = faircalib.quantize_model(m.model, tokenizer=m.tokenizer, paper_scale=True,
                                  calibration={"n": 2, "seq_len": 8, "epochs": 0},
                                  probe={"n_samples": 2, "batch_size": 2, "steps": 4, "window": 4})
    assert (q3.config.probe.steps, q3.config.probe.window) == (4, 4)  # flags over the paper scale
    assert q3.defaults["probe"] == "given steps / window"  # both given: the paper scale decided nothing else
    q4 = faircalib.quantize_model(m.model, tokenizer=m.tokenizer, method="rtn")
    assert q4.defaults == {} and "probe" not in q4.report


def test_zoo_source_uses_the_model_card(monkeypatch):
    """zoo:NAME -> the card's T / L; the probe itself is stubbed out (its cost is not the point here)."""
    from faircalib import pipeline

    seen = {}

    def fake_run_method(model, tokenizer, cfg, **kw):
        seen["probe"] = cfg.probe
        return model, {"wall_time_s": 0.0}

    monkeypatch.setattr(pipeline, "run_method", fake_run_method)
    q = faircalib.quantize_model("zoo:tiny-llada", calibration={"n": 4, "seq_len": 16})
    assert (seen["probe"].steps, seen["probe"].window, seen["probe"].n_samples) == (16, 16, 512)
    assert q.report["probe"]["defaults_from"] == "model card of zoo:tiny-llada"


def test_errors_at_the_edge(tiny_model_dir):
    lin = torch.nn.Linear(4, 4)
    with pytest.raises(TypeError, match=r"expects a faircalib DiffusionLM.*torch\.nn\.modules\.linear\.Linear.*"
                                        r"load_dllm\('/path/to/LLaDA-8B-Instruct'\)"):
        faircalib.quantize_model(lin)
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['calib_n'\]; allowed: .*calibration"):
        faircalib.quantize_model(str(tiny_model_dir), calib_n=4)
    with pytest.raises(ConfigError, match="needs a tokenizer"):
        faircalib.quantize_model(tiny_model("llada"), method="flatquant")
    with pytest.raises(ConfigError, match="bits: 'w2a2'"):
        faircalib.quantize_model(str(tiny_model_dir), bits="w2a2")
