import copy

import pytest
import torch

from faircalib.calibrate import CalibConfig, calibrate_layerwise, quantize
from faircalib.errors import ConfigError
from faircalib.eval.fidelity import compare_to_reference
from faircalib.models import tiny_model
from faircalib.quant import QuantConfig
from faircalib.quant.runtime import KroneckerOnline, QuantEmbedding, QuantLinear

FAST = CalibConfig(epochs=3, batch_size=4)


@pytest.mark.parametrize("arch", ["llada", "dream"])
def test_rtn_needs_no_data_and_keeps_the_model_api(arch, eval_ids):
    m = tiny_model(arch)
    q = quantize(copy.deepcopy(m), QuantConfig.from_bits("w4a4", method="rtn"))
    for block in q.blocks:
        assert all(isinstance(block.role(r), QuantLinear) for r in ("q", "k", "v", "o", "gate", "up", "down"))
        assert len(block.act_transforms) == 0
    assert q.faircalib_quant["quant_config"]["method"] == "rtn"
    logits = q(eval_ids)
    assert logits.shape == (8, 24, 96) and bool(torch.isfinite(logits).all())
    head = q.lm_head  # int8 weight-only head and int8 embedding by default
    assert head is None or (isinstance(head, QuantLinear) and (head.w_bits, head.a_bits) == (8, 16))
    assert head is None or (isinstance(q.embed_tokens, QuantEmbedding) and q.embed_tokens.bits == 8)


def test_w8a8_is_near_fp_and_w4a4_is_not(eval_ids, make_outlier_model):
    m = make_outlier_model()
    kl = {}
    for setting in ("w8a8", "w4a4"):
        q = quantize(copy.deepcopy(m), QuantConfig.from_bits(setting, method="rtn"))
        kl[setting] = compare_to_reference(q, eval_ids, m, ratios=(0.5,)).kl_to_ref
    print(f"\nRTN KL to FP: W8A8 {kl['w8a8']:.2e}, W4A4 {kl['w4a4']:.2e}")
    assert kl["w8a8"] < kl["w4a4"] / 50


def test_flatquant_beats_rtn_on_a_tiny_model(calib_ids, eval_ids, make_outlier_model):
    """A handful of epochs of FlatQuant (transforms + clipping) beat RTN per block and end to end."""
    m = make_outlier_model()
    qcfg = QuantConfig.from_bits("w4a4")
    rtn_report = calibrate_layerwise(copy.deepcopy(m), calib_ids, qcfg.replace(method="rtn"), FAST)
    flat_model = copy.deepcopy(m)
    flat_report = calibrate_layerwise(flat_model, calib_ids, qcfg, FAST)
    rtn_loss = [b.final_loss for b in rtn_report.blocks]
    flat_loss = [b.final_loss for b in flat_report.blocks]
    rtn_model = quantize(copy.deepcopy(m), qcfg.replace(method="rtn"))
    kl_rtn = compare_to_reference(rtn_model, eval_ids, m, ratios=(0.5,)).kl_to_ref
    kl_flat = compare_to_reference(flat_model, eval_ids, m, ratios=(0.5,)).kl_to_ref
    print(f"\nblock MSE rtn={rtn_loss} flatquant={flat_loss}; held-out KL rtn={kl_rtn:.2e} flatquant={kl_flat:.2e}")
    assert all(f < 0.8 * r for f, r in zip(flat_loss, rtn_loss))
    assert kl_flat < 0.8 * kl_rtn
    assert all(isinstance(b.act_transforms["qkv"], KroneckerOnline) for b in flat_model.blocks)
    # the learned loss went down from its SmoothQuant/identity initialisation
    assert all(b.final_loss < b.init_loss for b in flat_report.blocks)


def test_faircalib_is_flatquant_with_position_weights(calib_ids, make_outlier_model):
    """Uniform weights reproduce FlatQuant bit for bit; a peaked prior changes what is learned."""
    m = make_outlier_model(n_layers=1)
    cc = CalibConfig(epochs=1)
    flat = quantize(copy.deepcopy(m), QuantConfig(method="flatquant"), calib_ids, calib_cfg=cc)
    uni = quantize(copy.deepcopy(m), QuantConfig(method="faircalib"), calib_ids, torch.ones(24), calib_cfg=cc)
    prior = torch.full((24,), 0.1)
    prior[-8:] = 3.0  # window-aligned prior: heavy on the last positions
    fair = quantize(copy.deepcopy(m), QuantConfig(method="faircalib"), calib_ids, prior, calib_cfg=cc)
    p_flat, p_uni, p_fair = (x.blocks[0].act_transforms["qkv"].p1 for x in (flat, uni, fair))
    assert torch.equal(p_flat, p_uni) and not torch.equal(p_flat, p_fair)
    assert fair.faircalib_quant["prior_hash"] and fair.faircalib_quant["prior_hash"] != uni.faircalib_quant["prior_hash"]


def test_quarot_gptq_beats_rtn_on_a_tiny_model(calib_ids, eval_ids, make_outlier_model):
    m = make_outlier_model("dream")
    rtn = quantize(copy.deepcopy(m), QuantConfig.from_bits("w4a4", method="rtn"))
    qr = quantize(copy.deepcopy(m), QuantConfig.from_bits("w4a4", method="quarot"), calib_ids)
    kl_rtn = compare_to_reference(rtn, eval_ids, m, ratios=(0.5,)).kl_to_ref
    kl_qr = compare_to_reference(qr, eval_ids, m, ratios=(0.5,)).kl_to_ref
    print(f"\nheld-out KL: rtn={kl_rtn:.2e} quarot={kl_qr:.2e}")
    assert kl_qr < 0.6 * kl_rtn
    assert type(qr.blocks[0].act_transforms["down"]).__name__ == "OnlineRotation"
    assert all(isinstance(qr.blocks[1].role(r), QuantLinear) for r in ("q", "o", "down"))


def test_method_input_checks(calib_ids):
    m = tiny_model()
    with pytest.raises(ConfigError, match="needs calibration data"):
        quantize(copy.deepcopy(m), QuantConfig(method="flatquant"))
    with pytest.raises(ConfigError, match="needs position_weights"):
        quantize(copy.deepcopy(m), QuantConfig(method="faircalib"), calib_ids)
    with pytest.raises(ConfigError, match="'quarot' uses uniform token weights"):
        quantize(copy.deepcopy(m), QuantConfig(method="quarot"), calib_ids, position_weights=torch.ones(24))
    with pytest.raises(ConfigError, match=r"position_weights has shape \(5,\); expected \(24,\)"):
        quantize(copy.deepcopy(m), QuantConfig(method="faircalib"), calib_ids, position_weights=torch.ones(5))


def test_head_and_embedding_settings(eval_ids):
    m = tiny_model("dream")
    q = quantize(copy.deepcopy(m), QuantConfig(method="rtn", quantize_head=True, quantize_embed=True))
    assert isinstance(q.lm_head, QuantLinear) and isinstance(q.embed_tokens, QuantEmbedding)
    assert (q.lm_head.w_bits, q.lm_head.a_bits, q.embed_tokens.bits) == (4, 4, 4)
    assert bool(torch.isfinite(q(eval_ids)).all())
    assert q.faircalib_quant["head_and_embedding"] == "head w4a4, embedding w4"
    fp = quantize(copy.deepcopy(m), QuantConfig(method="rtn", head_bits=16, embed_bits=16))
    assert type(fp.lm_head) is torch.nn.Linear and type(fp.embed_tokens) is torch.nn.Embedding
    assert fp.faircalib_quant["head_and_embedding"] == "fp"
    # the default int8 weight-only head / int8 embedding adds little to W4A4's own error (its perturbation
    # re-draws W4A4's rounding, so compare each model's distance to FP, not the two models to each other)
    q8 = quantize(copy.deepcopy(m), QuantConfig(method="rtn"))
    kl_fp = compare_to_reference(fp, eval_ids, m, ratios=(0.5,)).kl_to_ref
    kl_8 = compare_to_reference(q8, eval_ids, m, ratios=(0.5,)).kl_to_ref
    assert kl_8 < 1.3 * kl_fp, (kl_8, kl_fp)
    tied = quantize(tiny_model("llada", tie_word_embeddings=True), QuantConfig(method="rtn"))
    assert tied.lm_head is None and tied.faircalib_quant["head_and_embedding"] == "fp (tied embedding and head)"
    with pytest.raises(ConfigError, match="tied word embeddings"):
        quantize(tiny_model("llada", tie_word_embeddings=True), QuantConfig(method="rtn", quantize_head=True))
    with pytest.raises(ConfigError, match="head_bits"):
        QuantConfig(head_bits=12)
