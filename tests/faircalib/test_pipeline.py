"""MethodConfig / run_method: FAIR-Calib = the Stage II engine with the aligned prior as position weights."""
from __future__ import annotations

import pytest
import torch

from faircalib.calibrate import CalibConfig
from faircalib.errors import ConfigError
from faircalib.models import tensor_hash, tiny_model
from faircalib.pipeline import ABLATIONS, MethodConfig, run_method
from faircalib.probe import PositionPrior, PriorSettings, ProbeConfig
from faircalib.quant.runtime import QuantLinear

S, J = 12, 7


def _special_position_model(seed: int = 0):
    """1-block tiny model with activation-outlier channels everywhere, plus token 5 (always at position J in
    the data below) carrying its own outlier channels: position J needs a different transform."""
    m = tiny_model("llada", seed=seed, n_layers=1)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        e = m.embed_tokens.weight
        e[5] = 0.02 * torch.randn(e.shape[1], generator=g)
        e[5, 10:14] = 0.5
        for norm in ("attn_norm", "mlp_norm"):
            m.blocks[0].role(norm).weight[[40, 50, 60]] *= 12.0
    return m


def _data(n: int, seed: int) -> torch.Tensor:
    ids = torch.randint(6, 95, (n, S), generator=torch.Generator().manual_seed(seed))
    ids[:, J] = 5
    return ids


def test_one_hot_prior_calibrates_only_what_that_position_needs():
    m = _special_position_model()
    calib, test = _data(16, 1), _data(16, 2)
    onehot = torch.zeros(1, S, dtype=torch.float64)
    onehot[0, J] = S  # mean 1 over the window, all weight on position J
    prior = PositionPrior(onehot, torch.tensor([0]), PriorSettings(), {})
    cc = CalibConfig(epochs=8, batch_size=4)

    def err(q):  # (S,) block-output MSE vs FP on held-out sequences of the same structure
        with torch.no_grad():
            ctx, h = m.context(S), m.embed(test)
            return (q.blocks[0](h, ctx) - m.blocks[0](h, ctx)).pow(2).mean((0, 2))

    rtn = err(run_method(m, None, MethodConfig(method="rtn"))[0])
    flat = err(run_method(m, None, MethodConfig(method="flatquant", calibration=cc), calib_ids=calib)[0])
    fair, info = run_method(m, None, MethodConfig(method="faircalib", calibration=cc.replace(floor=0.0)), prior=prior,
                            calib_ids=calib)
    fair = err(fair)
    assert info["quant"]["prior_hash"] == tensor_hash(prior.aligned(S, 0.0))
    others = [i for i in range(S) if i != J]
    rel = fair / flat  # FAIR-Calib (one-hot) relative to uniform weights, per position
    assert float(fair[J]) < 0.6 * float(rtn[J])  # calibration helps the weighted position ...
    assert float(rel[J]) < 0.8 * float(rel[others].mean())  # ... much more than it helps elsewhere
    assert float(rel[others].mean()) > 1.1  # positions with weight 0 are left worse than uniform leaves them


def test_fp_and_rtn_leave_the_input_model_untouched():
    m = tiny_model("dream")
    before = {k: v.clone() for k, v in m.state_dict().items()}
    fp, info = run_method(m, None, MethodConfig(method="fp"))
    assert fp is not m and info["method_config"]["method"] == "fp"
    rtn, _ = run_method(m, None, MethodConfig(method="rtn", bits="w8a8"))
    assert isinstance(rtn.blocks[0].role("q"), QuantLinear) and not isinstance(m.blocks[0].role("q"), QuantLinear)
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in before.items())
    ids = torch.randint(3, 90, (2, 10))
    with torch.no_grad():
        assert torch.equal(fp(ids), m(ids))


def test_faircalib_without_a_prior_probes_the_fp_model_first(byte_tokenizer):
    tok = byte_tokenizer
    m = tiny_model("llada", vocab_size=len(tok), mask_token_id=tok.mask_token_id, pad_token_id=tok.pad_token_id,
                   eos_token_id=tok.eos_token_id)
    probe = ProbeConfig(n_samples=4, steps=4, window=4, batch_size=4)
    calib = torch.randint(3, len(tok), (4, 10), generator=torch.Generator().manual_seed(0))
    cfg = MethodConfig(method="faircalib", probe=probe, calibration=CalibConfig(epochs=0))
    q, info = run_method(m, tok, cfg, calib_ids=calib)
    p = info["prior"]
    assert p["n_samples"] == 4 and p["window"] == 4 and p["meta"]["policy"] == "random"
    assert p["meta"]["data_hash"] and p["meta"]["model_hash"] and len(p["cache_key"]) == 64
    # the weights Stage II used are the prior on the last L=4 positions with the floor before them
    w = torch.tensor([0.1] * 6 + p["curve"], dtype=torch.float32)
    assert q.faircalib_quant["prior_hash"] == tensor_hash(w)
    assert info["calib_data"]["source"] == "given" and info["calib_data"]["shape"] == [4, 10]
    # a prior probed with other settings is refused
    other = PositionPrior(torch.ones(1, 4, dtype=torch.float64), torch.tensor([0]), PriorSettings(beta=0.0), {})
    with pytest.raises(ConfigError, match="probed with"):
        run_method(m, tok, cfg, prior=other, calib_ids=calib)
    # weighted QDrop (paper App. E.2) uses the same prior; plain QDrop does not
    _, qi = run_method(m, tok, MethodConfig(method="qdrop", qdrop_weighted=True, probe=probe,
                                            calibration=CalibConfig(epochs=0)), calib_ids=calib)
    assert qi["quant"]["prior_hash"] is not None
    _, qi = run_method(m, tok, MethodConfig(method="qdrop", calibration=CalibConfig(epochs=0)), calib_ids=calib)
    assert qi["quant"]["prior_hash"] is None


def test_ablation_rows_and_defaults():
    assert MethodConfig.ablation_row("uniform").method == "flatquant"
    assert MethodConfig.ablation_row("frontier_only").probe.prior == PriorSettings(beta=0.0)
    assert MethodConfig.ablation_row("reliability_only").probe.prior.schedule == "none"
    assert MethodConfig.ablation_row("schedule_late", bits="w3a4").probe.prior.schedule == "late"
    assert MethodConfig.ablation_row("both").probe.prior == PriorSettings() == ABLATIONS["schedule_early"][1]
    with pytest.raises(ConfigError, match="^ablation: 'nope' is unknown"):
        MethodConfig.ablation_row("nope")
    d = MethodConfig()  # docs/method.md defaults
    c = d.calibration
    assert (c.data, c.n, c.seq_len, c.floor, c.epochs, c.lr) == ("builtin:mix:train", 128, 1024, 0.1, 15, 5e-3)
    assert (d.probe.n_samples, d.probe.steps, d.probe.window) == (512, 256, 256)
    assert MethodConfig.from_dict(d.to_dict()) == d
    with pytest.raises(ConfigError, match="^method: 'gptq' is not allowed"):
        MethodConfig(method="gptq")
    with pytest.raises(ConfigError, match="^bits: 'w2a2' is not allowed"):
        MethodConfig(bits="w2a2")
    with pytest.raises(ConfigError, match="^qdrop_weighted: "):
        MethodConfig(method="flatquant", qdrop_weighted=True)
    assert MethodConfig(bits="W8A8").quant_config().setting == "w8a8"


def test_from_dict_errors_keep_the_field_path():
    cases = {"probe.steps": {"probe": {"steps": 0}}, "probe.prior.beta": {"probe": {"prior": {"beta": -1}}},
             "probe.block_length": {"probe": {"window": 10, "block_length": 3}},
             "calibration.nan_policy": {"calibration": {"nan_policy": "skip"}},
             "calibration.stepz": {"calibration": {"stepz": 1}}, "seed": {"seed": -1}}
    for path, d in cases.items():
        with pytest.raises(ConfigError) as e:
            MethodConfig.from_dict(d)
        assert str(e.value).startswith(f"{path}: ") and e.value.field == path, str(e.value)
    # one spelling per option: the library's
    assert MethodConfig.from_dict({"probe": {"prior": {"reliability": "prob"}}}).probe.prior.reliability == "prob"
    with pytest.raises(ConfigError, match=r"^probe\.prior\.reliability: 'probability' is not allowed; allowed: prob"):
        MethodConfig.from_dict({"probe": {"prior": {"reliability": "probability"}}})


def test_data_seed_and_quantizer_seed_are_separate(byte_tokenizer):
    from faircalib.pipeline import calibration_ids

    a = CalibConfig(data="builtin:kjv:train", n=2, seq_len=16)
    ids0, ids1 = calibration_ids(byte_tokenizer, a), calibration_ids(byte_tokenizer, a.replace(data_seed=1))
    assert ids0.shape == (2, 16) and not torch.equal(ids0, ids1)
    cfg = MethodConfig(method="qdrop", seed=5, calibration=a)
    assert cfg.quant_config().seed == 5 and cfg.calibration.data_seed == 0
