"""Masked calibration data: shapes, mask ratios, only window positions masked, deterministic, and built
from calibration (probe-split) data only."""
from __future__ import annotations

import pytest
import torch

from faircalib.calibrate.masked import mask_window
from faircalib.errors import ConfigError

MASK = 2


def test_shapes_counts_and_only_the_window_is_masked():
    ids = torch.randint(3, 90, (64, 40), generator=torch.Generator().manual_seed(0))
    mc = mask_window(ids, MASK, window=16, seed=0)
    assert mc.ids.shape == ids.shape and mc.masked.shape == ids.shape and mc.ratios.shape == (64,)
    assert not mc.masked[:, :24].any()  # prompt/context stays visible
    counts = mc.masked[:, 24:].sum(1)
    assert torch.equal(counts, (mc.ratios * 16).round().long().clamp(1, 16))
    assert bool((mc.ids[mc.masked] == MASK).all()) and torch.equal(mc.ids[~mc.masked], ids[~mc.masked])
    assert not torch.equal(ids, mc.ids) and ids.max() < 90  # input untouched


def test_ratios_are_uniform_on_t_min_to_1():
    ids = torch.zeros(4000, 20, dtype=torch.long) + 5
    mc = mask_window(ids, MASK, window=20, seed=3, t_min=0.2)
    r = mc.ratios
    assert float(r.min()) >= 0.2 and float(r.max()) <= 1.0
    assert abs(float(r.mean()) - 0.6) < 0.01  # U(0.2, 1) has mean 0.6
    frac = mc.masked.double().mean(1)
    assert abs(float(frac.mean()) - 0.6) < 0.02  # realised masked fraction follows the ratio
    hist = torch.histc(r.float(), bins=4, min=0.2, max=1.0)
    assert float(hist.min()) > 0.9 * 1000  # flat


def test_deterministic_in_seed_and_window_longer_than_sequence():
    ids = torch.randint(3, 90, (8, 10), generator=torch.Generator().manual_seed(1))
    a, b, c = mask_window(ids, MASK, 16, seed=5), mask_window(ids, MASK, 16, seed=5), mask_window(ids, MASK, 16, seed=6)
    assert torch.equal(a.ids, b.ids) and not torch.equal(a.ids, c.ids)
    assert a.masked.sum(1).min() >= 1  # whole sequence is the window; at least one mask per row
    with pytest.raises(ConfigError, match="window=0"):
        mask_window(ids, MASK, 0)
    with pytest.raises(ConfigError, match="must be \\(N, S\\)"):
        mask_window(ids[0], MASK, 4)


def test_built_on_probe_split_task_sequences_never_heldout():
    from faircalib.data import LONG_FAMILIES, sample_task_sequences, sample_tasks
    from faircalib.models import load_dllm

    tok = load_dllm("zoo:tiny-llada").tokenizer
    ids = sample_task_sequences(tok, "builtin:longtasks:probe", 4, 160, 48, seed=0)
    mc = mask_window(ids, tok.mask_token_id, 48, seed=0)
    visible_text = [tok.decode([t for t, m in zip(r.tolist(), mm.tolist()) if not m]) for r, mm in zip(mc.ids, mc.masked)]
    heldout_q = [e.question for e in sample_tasks(400, "heldout", 0, LONG_FAMILIES)]
    for text in visible_text:
        assert not any(q in text for q in heldout_q)
    assert int((mc.ids == tok.mask_token_id).sum()) == int(mc.masked.sum())


def test_calib_config_layout_and_masking_reach_the_pipeline():
    from faircalib.calibrate import CalibConfig
    from faircalib.models import load_dllm
    from faircalib.pipeline import calibration_ids

    tok = load_dllm("zoo:tiny-llada").tokenizer
    mask = tok.mask_token_id
    plain = CalibConfig(data="builtin:longtasks:probe", n=4, seq_len=96, layout="answer", window=48, data_seed=3)
    ids = calibration_ids(tok, plain)
    assert ids.shape == (4, 96) and not bool((ids == mask).any())
    assert bool((ids[:, -1] == tok.eos_token_id).all())  # every row ends on an EOS-filled answer window
    masked = calibration_ids(tok, plain.replace(masking="window"), mask_token_id=mask)
    m = masked == mask
    assert not m[:, :48].any() and bool(m[:, 48:].any(1).all())
    assert torch.equal(masked[~m], ids[~m])  # the same sequences, masked
    # the window falls back to the probe window when calibration.window is unset
    assert torch.equal(calibration_ids(tok, plain.replace(window=None), window=48), ids)
    with pytest.raises(ConfigError, match="calibration.window"):
        calibration_ids(tok, plain.replace(window=None))
    with pytest.raises(ConfigError, match="mask token id"):
        calibration_ids(tok, plain.replace(masking="window"))
    with pytest.raises(ConfigError, match="layout"):
        CalibConfig(layout="zigzag")
