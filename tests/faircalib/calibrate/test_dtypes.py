"""A bf16 model stays bf16 through Stage II (FP weights, block activations, the deployed model), while
the learnable transform / clipping parameters and the loss are float32; results track the float32 run."""
from __future__ import annotations

import pytest
import torch

from faircalib.calibrate import CalibConfig, quantize
from faircalib.calibrate.engine import calibrate_layerwise
from faircalib.models import tiny_model
from faircalib.pipeline import MethodConfig, run_method
from faircalib.quant import QuantConfig
from faircalib.quant.fake import learnable_parameters


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).pow(2).mean() / b.float().pow(2).mean())


@pytest.mark.parametrize("arch", ["llada", "dream"])
def test_fake_quant_training_keeps_bf16_weights_and_float32_parameters(arch):
    model = tiny_model(arch, seed=1).to(torch.bfloat16)
    ids = torch.randint(0, 90, (4, 16), generator=torch.Generator().manual_seed(0))
    seen = []
    res = calibrate_layerwise(model, ids, QuantConfig(method="flatquant"), CalibConfig(epochs=4), finalize=False,
                              progress=lambda e: seen.append(e))
    for block in model.blocks:
        params = learnable_parameters(block)
        assert params and all(p.dtype == torch.float32 for p in params.values())
        fp = [p for n, p in block.named_parameters() if n not in params]
        assert fp and all(p.dtype == torch.bfloat16 for p in fp)
    assert all(b.final_loss is not None and b.final_loss < b.init_loss for b in res.blocks)
    assert all(isinstance(e["loss"], float) for e in seen if e["event"] == "epoch")
    out = model(ids)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()  # logits are float32 by contract


@pytest.mark.parametrize("method", ["flatquant", "qdrop", "quarot", "rtn"])
def test_bf16_quantized_model_matches_float32_run(method):
    ids = torch.randint(0, 90, (4, 16), generator=torch.Generator().manual_seed(0))
    ref32 = tiny_model("dream", seed=2)
    with torch.no_grad():
        fp_logits = ref32(ids)
    outs = {}
    for dtype in (torch.float32, torch.bfloat16):
        m = tiny_model("dream", seed=2).to(dtype)
        quantize(m, QuantConfig(method=method), calib_ids=ids, calib_cfg=CalibConfig(epochs=2))
        assert {p.dtype for p in m.parameters()} == {dtype}  # FP parts (norms, embedding, head) unchanged dtype
        assert m.dtype == dtype
        with torch.no_grad():
            outs[dtype] = m(ids)
    err32, err16 = _rel(outs[torch.float32], fp_logits), _rel(outs[torch.bfloat16], fp_logits)
    assert err32 < 0.05 and err16 < 0.05, (err32, err16)
    # bf16 rounding re-draws W4A4's rounding decisions, so compare both runs' distance to FP (not each other)
    assert err16 < 1.5 * err32 + 1e-3, (err32, err16)


def test_run_method_defaults_to_auto_device_and_records_it(byte_tokenizer):
    tok = byte_tokenizer
    m = tiny_model("llada", vocab_size=len(tok), mask_token_id=tok.mask_token_id, pad_token_id=tok.pad_token_id,
                   eos_token_id=tok.eos_token_id).to(torch.bfloat16)
    cfg = MethodConfig.from_dict({"method": "flatquant", "calibration": {"n": 2, "seq_len": 8, "epochs": 1}})
    q, info = run_method(m, tok, cfg)
    assert info["device"] == ("cuda:0" if torch.cuda.is_available() else "cpu")
    assert q.dtype == torch.bfloat16 and next(q.parameters()).device.type == "cpu"  # calibrated from the host
