import copy
import json

import pytest
import torch

from faircalib.calibrate import CalibConfig, calibrate_layerwise, weighted_mse
from faircalib.errors import CalibrationError
from faircalib.quant.config import QuantConfig
from faircalib.quant.fake import learnable_parameters
from faircalib.quant.runtime import KroneckerOnline, QuantLinear

W4A4 = QuantConfig.from_bits("w4a4", method="flatquant")
TWO = CalibConfig(epochs=2, batch_size=4)


def test_weighted_mse_one_hot_weight_counts_only_that_position():
    g = torch.Generator().manual_seed(0)
    out, tgt = torch.randn(3, 6, 8, generator=g), torch.randn(3, 6, 8, generator=g)
    w = torch.zeros(3, 6)
    w[:, 2] = 5.0
    loss = weighted_mse(out, tgt, w)
    torch.testing.assert_close(loss, (out[:, 2] - tgt[:, 2]).pow(2).mean())
    out2 = out.clone()
    out2[:, [0, 1, 3, 4, 5]] += 100.0  # errors elsewhere do not count
    torch.testing.assert_close(weighted_mse(out2, tgt, w), loss)
    out2.requires_grad_(True)
    weighted_mse(out2, tgt, w).backward()
    assert float(out2.grad[:, [0, 1, 3, 4, 5]].abs().sum()) == 0 and float(out2.grad[:, 2].abs().sum()) > 0
    # uniform weights = plain MSE; the normalisation makes the scale of w irrelevant
    torch.testing.assert_close(weighted_mse(out, tgt, torch.ones(3, 6)), (out - tgt).pow(2).mean())
    torch.testing.assert_close(weighted_mse(out, tgt, 7 * w), loss)


def test_engine_applies_per_sequence_weights(make_outlier_model, calib_ids):
    """(N, S) one-hot weights: the engine's block-0 loss is the error at each sequence's own position."""
    m = make_outlier_model(n_layers=1)
    fp = copy.deepcopy(m)
    N, S = calib_ids.shape
    pos = torch.arange(N) % S * 3 % S
    w = torch.zeros(N, S)
    w[torch.arange(N), pos] = 1.0
    rep = calibrate_layerwise(m, calib_ids, W4A4, CalibConfig(epochs=0), position_weights=w, finalize=False)
    with torch.no_grad():
        ctx = fp.context(S)
        h = fp.embed(calib_ids)
        err = (m.blocks[0](h, ctx) - fp.blocks[0](h, ctx)).pow(2).mean(-1)  # (N, S)
    expect = float(err[torch.arange(N), pos].mean())
    assert rep.blocks[0].init_loss == pytest.approx(expect, rel=1e-5)
    assert rep.blocks[0].init_loss != pytest.approx(float(err.mean()), rel=1e-2)


def _learned(model):
    return {f"{i}.{k}": v.detach().clone() for i, b in enumerate(model.blocks)
            for k, v in learnable_parameters(b).items()}


@pytest.mark.parametrize("method", ["flatquant", "qdrop"])
def test_resume_after_interruption_gives_identical_parameters(method, make_outlier_model, calib_ids, tmp_path):
    m = make_outlier_model(n_layers=2)
    qcfg = QuantConfig.from_bits("w4a4", method=method)
    ref = copy.deepcopy(m)
    rep_ref = calibrate_layerwise(ref, calib_ids, qcfg, TWO, state_dir=tmp_path / "a", finalize=False)

    class Kill(Exception):
        pass

    def kill_after_block_0(ev):
        if ev["event"] == "block_done" and ev["block"] == 0:
            raise Kill

    with pytest.raises(Kill):
        calibrate_layerwise(copy.deepcopy(m), calib_ids, qcfg, TWO, state_dir=tmp_path / "b",
                            progress=kill_after_block_0, finalize=False)
    assert sorted(p.name for p in (tmp_path / "b").glob("block_*.json")) == ["block_0000.json"]
    events = []
    resumed = copy.deepcopy(m)  # a fresh process would reload the FP model
    rep = calibrate_layerwise(resumed, calib_ids, qcfg, TWO, state_dir=tmp_path / "b", progress=events.append,
                              finalize=False)
    assert [b.resumed for b in rep.blocks] == [True, False]
    assert [e["epoch"] for e in events if e["event"] == "epoch"] == [1, 2]  # only block 1 trained
    a, b = _learned(ref), _learned(resumed)
    assert a.keys() == b.keys() and len(a) > 0
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    assert [x.final_loss for x in rep.blocks] == [x.final_loss for x in rep_ref.blocks]
    lines = [json.loads(s) for s in (tmp_path / "b" / "loss_log.jsonl").read_text().splitlines()]
    assert [ln["block"] for ln in lines] == [0, 1] and len(lines[1]["epoch_losses"]) == 2
    # a different run refuses the directory
    with pytest.raises(CalibrationError, match="holds another calibration run"):
        calibrate_layerwise(copy.deepcopy(m), calib_ids, qcfg.replace(seed=1), TWO, state_dir=tmp_path / "b")


def test_quarot_resume_gives_identical_codes(make_outlier_model, calib_ids, tmp_path):
    m = make_outlier_model(n_layers=2)
    qcfg = QuantConfig.from_bits("w4a4", method="quarot")
    ref = copy.deepcopy(m)
    calibrate_layerwise(ref, calib_ids, qcfg, state_dir=tmp_path / "a")

    def kill(ev):
        if ev["event"] == "block_done" and ev["block"] == 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        calibrate_layerwise(copy.deepcopy(m), calib_ids, qcfg, state_dir=tmp_path / "b", progress=kill)
    res = copy.deepcopy(m)
    rep = calibrate_layerwise(res, calib_ids, qcfg, state_dir=tmp_path / "b")
    assert [b.resumed for b in rep.blocks] == [True, False]
    for b_ref, b_res in zip(ref.blocks, res.blocks):
        for r in ("q", "k", "v", "o", "gate", "up", "down"):
            assert torch.equal(b_ref.role(r).qweight, b_res.role(r).qweight)
            assert torch.equal(b_ref.role(r).w_scale, b_res.role(r).w_scale)


def test_streaming_and_non_streaming_agree(make_outlier_model, calib_ids):
    m = make_outlier_model(n_layers=2)
    a, b = copy.deepcopy(m), copy.deepcopy(m)
    calibrate_layerwise(a, calib_ids, W4A4, CalibConfig(epochs=1), finalize=False)
    rep = calibrate_layerwise(b, calib_ids, W4A4, CalibConfig(epochs=1, streaming=False), finalize=False)
    assert not rep.streaming
    la, lb = _learned(a), _learned(b)
    assert all(torch.equal(la[k], lb[k]) for k in la)


def _nan_injector(block_index):
    """Progress callback that corrupts a learned parameter of `block_index` after its first epoch."""
    state = {}

    def cb(ev):
        if ev["event"] == "epoch" and ev["block"] == block_index and ev["epoch"] == 1:
            with torch.no_grad():
                state["model"].blocks[block_index].act_transforms["gate_up"].transform.p1[0, 0] = float("nan")
    return cb, state


def test_nan_guard_errors_naming_the_block(make_outlier_model, calib_ids):
    m = make_outlier_model(n_layers=2)
    cb, state = _nan_injector(1)
    state["model"] = m
    with pytest.raises(CalibrationError, match=r"block 1 \(flatquant\): non-finite loss.*nan_policy='rtn'"):
        calibrate_layerwise(m, calib_ids, W4A4, TWO, progress=cb)


def test_nan_guard_falls_back_to_rtn_for_that_block(make_outlier_model, calib_ids, eval_ids, tmp_path):
    m = make_outlier_model(n_layers=2)
    cb, state = _nan_injector(1)
    state["model"] = m
    events = []
    rep = calibrate_layerwise(m, calib_ids, W4A4, TWO.replace(nan_policy="rtn"), state_dir=tmp_path,
                              progress=lambda e: (events.append(e), cb(e)))
    assert [f["block"] for f in rep.fallbacks] == [1] and "non-finite loss" in rep.fallbacks[0]["reason"]
    assert any(e["event"] == "fallback" and e["block"] == 1 for e in events)
    assert isinstance(m.blocks[0].act_transforms["qkv"], KroneckerOnline)  # block 0 calibrated
    assert len(m.blocks[1].act_transforms) == 0  # block 1: plain RTN, no transform, clip 1
    assert isinstance(m.blocks[1].role("q"), QuantLinear) and float(m.blocks[1].role("q").act_clip) == 1.0
    assert bool(torch.isfinite(m(eval_ids)).all())
    assert json.loads((tmp_path / "block_0001.json").read_text())["fallback"].startswith("rtn")


def test_progress_events(make_outlier_model, calib_ids):
    events = []
    calibrate_layerwise(make_outlier_model(n_layers=2), calib_ids, W4A4, TWO, progress=events.append)
    kinds = [e["event"] for e in events]
    assert kinds == ["start", "block_start", "epoch", "epoch", "block_done", "block_start", "epoch", "epoch",
                     "block_done", "done"]
    ep = next(e for e in events if e["event"] == "epoch")
    assert ep["block"] == 0 and ep["epochs"] == 2 and ep["loss"] > 0
