"""docs/checkpoint.md: its worked example (the python block under "Worked example"), run as written
against a freshly saved W4A4 FlatQuant checkpoint, reproduces the loaded model's layer exactly."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from faircalib.calibrate import CalibConfig, quantize
from faircalib.checkpoint import FORMAT, load_quantized, save_quantized
from faircalib.checkpoint.io import FORMAT_VERSION
from faircalib.models import tiny_model
from faircalib.quant import QuantConfig

DOC = Path(__file__).resolve().parents[2] / "docs" / "checkpoint.md"


def _example() -> str:
    text = DOC.read_text()
    section = text[text.index("## Worked example"):]
    m = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert m, "docs/checkpoint.md has no python block under 'Worked example'"
    return m.group(1)


def test_the_doc_names_the_current_format_version():
    text = DOC.read_text()
    assert f"**Format `{FORMAT}`, version {FORMAT_VERSION}.**" in text
    assert f'"format_version": {FORMAT_VERSION}' in text


@pytest.mark.parametrize("method", ["flatquant", "faircalib"])
def test_worked_example_reconstructs_the_layer(method, tmp_path, monkeypatch, capsys):
    torch.manual_seed(0)
    model = tiny_model("llada")                                    # LLaDA layout, the doc's tensor names
    ids = torch.randint(3, model.config.vocab_size, (4, 16), generator=torch.Generator().manual_seed(1))
    weights = torch.linspace(0.2, 1.0, 16) if method == "faircalib" else None   # a position prior stand-in
    q = quantize(model, QuantConfig.from_bits("w4a4", method=method), ids, position_weights=weights,
                 calib_cfg=CalibConfig(epochs=1))
    save_quantized(q, tmp_path / "ckpt")
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(_example(), str(DOC), "exec"), scope)  # noqa: S102 - the doc's own example, unchanged
    assert "model.transformer.blocks.0.q_proj" in capsys.readouterr().out

    block = load_quantized(tmp_path / "ckpt").model.blocks[0]
    lin, point = block.role("q"), block.act_transforms["qkv"]
    # the reconstructed weight IS the stored one, bit for bit
    assert torch.equal(scope["weight"], lin.dequantized_weight())
    assert torch.equal(scope["codes"].to(torch.int8), lin.codes())
    # the doc's transform equals the deployed module's (kron(P1, P2) vs the factored product: rounding only)
    with torch.no_grad():
        xt_model = point(scope["x"])
        y_model = lin(scope["xt"])                                 # same transformed input -> same codes
    torch.testing.assert_close(scope["xt"], xt_model, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(scope["y"], y_model, rtol=1e-5, atol=1e-6)
    # and it is a real W4A4 layer: the output differs from the FP product with the dequantized weight
    fp = scope["xt"] @ scope["weight"].t()
    assert float((scope["y"] - fp).abs().max()) > 1e-4 * float(fp.abs().max())
