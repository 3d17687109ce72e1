import copy
import json

import pytest
import torch

from faircalib.calibrate import CalibConfig, calibrate_layerwise, quantize
from faircalib.checkpoint import checkpoint_bytes, load_quantized, save_quantized
from faircalib.errors import CheckpointError
from faircalib.models import tiny_model
from faircalib.quant import QuantConfig
from faircalib.quant.runtime import KroneckerOnline, QuantLinear

TWO = CalibConfig(epochs=2)


def test_packed_checkpoint_loads_and_matches_fake_quant(make_outlier_model, calib_ids, eval_ids, tmp_path,
                                                        byte_tokenizer):
    """Trained fake-quant model (unfolded, float32) vs the loaded packed checkpoint (float64 fold, int4 codes,
    emulated integer GEMM). Tolerances stated in the asserts."""
    m = make_outlier_model("dream")
    # head / embedding FP here: the fake-quant model (blocks only) is the reference for the blocks' folding
    qcfg = QuantConfig.from_bits("w4a4", method="flatquant", head_bits=16, embed_bits=16)
    fake = copy.deepcopy(m)
    calibrate_layerwise(fake, calib_ids, qcfg, TWO, finalize=False)
    q = quantize(copy.deepcopy(m), qcfg, calib_ids, calib_cfg=TWO)
    save_quantized(q, tmp_path / "ck", meta={"source": "tiny"}, tokenizer=byte_tokenizer)
    loaded = load_quantized(tmp_path / "ck")
    lm = loaded.model
    assert isinstance(lm.blocks[0].role("q"), QuantLinear) and isinstance(lm.blocks[0].act_transforms["down"],
                                                                          KroneckerOnline)
    assert lm.blocks[0].role("q").qweight.dtype == torch.uint8 and loaded.tokenizer is not None
    with torch.no_grad():
        l_fake, l_q, l_load, l_fp = fake(eval_ids), q(eval_ids), lm(eval_ids), m(eval_ids)
    assert torch.equal(l_q, l_load)  # save/load is lossless
    diff = (l_load - l_fake).abs()
    quant_effect = float((l_fake - l_fp).abs().mean())
    agree = float((l_load.argmax(-1) == l_fake.argmax(-1)).float().mean())
    seq_max = diff.amax(dim=(1, 2))  # (B,) each sequence's largest logit difference
    exact = float((seq_max < 1e-5).float().mean())
    print(f"\nloaded vs fake-quant logits: per-sequence max abs {[f'{v:.1e}' for v in seq_max.tolist()]}, mean "
          f"abs {float(diff.mean()):.2e} (quantization itself moves logits by mean {quant_effect:.2e}); argmax "
          f"agreement {agree:.4f}")
    # float64 folding vs the float32 fake-quant path: a sequence agrees to float rounding (~3e-7), unless one of
    # its activations sits on a 4-bit rounding boundary and lands in the neighbouring level; with bidirectional
    # attention that moves the whole sequence's logits by part of one quantization step (6e-3 in 1 of 8
    # sequences on an AVX2 CPU, none on AVX-512: the SIMD path decides which values sit on a boundary)
    assert exact >= 0.75 and float(seq_max.max()) < 0.5 * quant_effect
    assert float(diff.mean()) < 1e-4 < 1e-2 * quant_effect and agree >= 0.99
    rec = json.loads((tmp_path / "ck" / "quant_config.json").read_text())
    assert (rec["method"], rec["w_bits"], rec["a_bits"], rec["seed"]) == ("flatquant", 4, 4, 0)
    assert rec["calib_config"]["epochs"] == 2 and rec["code_version"] and rec["meta"] == {"source": "tiny"}
    assert rec["layout"]["model.layers.0.act_transforms.qkv"] == {"kind": "kronecker", "n1": 8, "n2": 8}


def test_quarot_online_rotation_survives_save_load(calib_ids, eval_ids, tmp_path):
    m = tiny_model("llada", tie_word_embeddings=True)  # QuaRot unties the head; the checkpoint must follow
    q = quantize(m, QuantConfig.from_bits("w4a4", method="quarot"), calib_ids)
    save_quantized(q, tmp_path)
    lm = load_quantized(tmp_path).model
    assert type(lm.blocks[0].act_transforms["down"]).__name__ == "OnlineRotation"
    assert type(lm.blocks[0].act_transforms["o"]).__name__ == "OnlineRotation"
    assert lm.lm_head is not None and not lm.config.tie_word_embeddings
    assert torch.equal(lm(eval_ids), q(eval_ids))
    rec = json.loads((tmp_path / "quant_config.json").read_text())
    assert rec["calibration"]["extra"]["quarot"]["down"] == "hadamard"


@pytest.mark.parametrize("setting, dtype", [("w3a4", torch.uint8), ("w8a8", torch.int8)])
def test_other_bit_widths_roundtrip(setting, dtype, eval_ids, tmp_path):
    q = quantize(tiny_model("llada"), QuantConfig.from_bits(setting, method="rtn"))
    save_quantized(q, tmp_path)
    lm = load_quantized(tmp_path).model
    assert lm.blocks[1].role("down").qweight.dtype == dtype
    assert torch.equal(lm.blocks[1].role("down").codes(), q.blocks[1].role("down").codes())
    assert torch.equal(lm(eval_ids), q(eval_ids))


def test_manifest_tamper_and_missing_files_are_detected(tmp_path):
    q = quantize(tiny_model("llada"), QuantConfig(method="rtn"))
    d = save_quantized(q, tmp_path / "ck")
    manifest = json.loads((d / "manifest.json").read_text())
    assert manifest["complete"] and {"quantized_linears.safetensors", "transforms.safetensors", "fp.safetensors",
                                     "quant_config.json", "config.json"} <= set(manifest["files"])
    load_quantized(d)
    f = d / "quantized_linears.safetensors"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0x01  # flip one bit of a packed weight
    f.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="quantized_linears.safetensors fails its sha256 check"):
        load_quantized(d)
    data[-1] ^= 0x01
    f.write_bytes(bytes(data))
    (d / "fp.safetensors").unlink()
    with pytest.raises(CheckpointError, match="fp.safetensors is missing"):
        load_quantized(d)
    (d / "manifest.json").write_text(json.dumps(dict(manifest, complete=False)))
    with pytest.raises(CheckpointError, match="incomplete"):
        load_quantized(d)
    (d / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match="no manifest.json"):
        load_quantized(d)
    with pytest.raises(CheckpointError, match="needs a model returned by"):
        save_quantized(tiny_model("llada"), tmp_path / "fp")


@pytest.mark.parametrize("method", ["rtn", "flatquant", "quarot"])
def test_checkpoint_bytes_matches_saved_tensors(method, calib_ids, tmp_path):
    """The shape-only size model equals the bytes of the tensors a bf16 checkpoint holds."""
    m = tiny_model("dream")
    fp_bytes = sum(t.numel() * t.element_size() for t in m.to(torch.bfloat16).state_dict().values())
    qcfg = QuantConfig.from_bits("w4a4", method=method)
    q = quantize(m.float(), qcfg, calib_ids, calib_cfg=CalibConfig(epochs=0)).to(torch.bfloat16)
    saved = sum(t.numel() * t.element_size() for t in q.state_dict().values())
    est = checkpoint_bytes(m.config, qcfg)
    assert est["fp_bytes"] == fp_bytes and est["quant_bytes"] == saved
    assert est["ratio"] == pytest.approx(fp_bytes / saved)


def test_default_checkpoint_is_over_3_2x_smaller_at_8b_shapes():
    """int8 head + embedding by default: LLaDA-8B / Dream-7B W4A4 checkpoints >= 3.2x smaller than bf16
    (FP head + embedding: < 2.9x); what stays FP is small (norms, biases, scales, transforms)."""
    from faircalib.models import parse_config, synth_config

    for like, lo in (("llada-8b", 3.4), ("dream-7b", 3.4)):
        cfg = parse_config(synth_config(like, 32 if like == "llada-8b" else 28))
        default = checkpoint_bytes(cfg, QuantConfig(method="flatquant"))
        fp_head = checkpoint_bytes(cfg, QuantConfig(method="flatquant", head_bits=16, embed_bits=16))
        assert default["ratio"] >= lo and fp_head["ratio"] < 2.9, (like, default["ratio"], fp_head["ratio"])
        b = default["breakdown"]
        fp_rest = b["norms"] + b["fp_linears"] + b["online_transforms"]
        assert b["fp_linears"] == 0 and fp_rest < 0.01 * default["quant_bytes"]
        assert b["embedding"] == cfg.vocab_size * (cfg.d_model + 4)  # int8 codes + float32 row scales
