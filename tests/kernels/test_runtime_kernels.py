"""The runtime's CUDA path (QuantLinear -> faircalib.kernels Triton W4A4) gives the same logits as its
torch reference path on tiny quantized models, here with the kernels forced onto CPU under
TRITON_INTERPRET=1. Stated tolerance: max |Δlogit| <= 1e-3 · max |logit| (float32 logits; the two paths
compute the same codes and the same float32 epilogue, so in practice they agree to float rounding)."""
from __future__ import annotations

import pytest
import torch

from faircalib.calibrate import quantize
from faircalib.models import tiny_model
from faircalib.quant import QuantConfig
from faircalib.quant.runtime import QuantLinear


def _set_backend(model, backend: str) -> int:
    n = 0
    for m in model.modules():
        if isinstance(m, QuantLinear):
            m.kernel_backend = backend
            n += int(m._use_w4a4_kernels(torch.empty(0)))
    return n


def _logits(model, ids, backend):
    _set_backend(model, backend)
    with torch.no_grad():
        return model(ids)


@pytest.mark.parametrize("arch,setting", [("llada", (4, 4)), ("dream", (4, 4)), ("llada", (3, 4))])
def test_triton_path_matches_reference_logits(dev, arch, setting):
    w_bits, a_bits = setting
    model = quantize(tiny_model(arch, seed=3), QuantConfig(method="rtn", w_bits=w_bits, a_bits=a_bits))
    ids = torch.randint(0, 95, (2, 24), generator=torch.Generator().manual_seed(0))
    ref = _logits(model, ids, "torch")
    n_kernel = _set_backend(model, "triton")
    assert n_kernel == 7 * model.config.n_layers  # every block linear takes the kernel path
    got = _logits(model.to(dev), ids.to(dev), "triton").cpu()
    model.cpu()
    assert torch.isfinite(got).all()
    assert (got - ref).abs().max() <= 1e-3 * ref.abs().max()
    assert (got.argmax(-1) == ref.argmax(-1)).float().mean() >= 0.99


def test_loaded_checkpoint_runs_on_kernels(dev, tmp_path, byte_tokenizer):
    from faircalib.checkpoint import load_quantized, save_quantized

    model = quantize(tiny_model("dream", seed=5), QuantConfig(method="rtn"))
    save_quantized(model, tmp_path / "ckpt", tokenizer=byte_tokenizer)
    loaded = load_quantized(tmp_path / "ckpt").model
    ids = torch.randint(0, 95, (1, 16), generator=torch.Generator().manual_seed(1))
    ref = _logits(loaded, ids, "torch")
    got = _logits(loaded, ids, "triton")
    assert (got - ref).abs().max() <= 1e-3 * ref.abs().max()


def test_non_w4a4_settings_keep_the_reference_path():
    model = quantize(tiny_model("llada", seed=0), QuantConfig(method="rtn", w_bits=8, a_bits=8))
    assert _set_backend(model, "triton") == 0  # W8A8: int8 weights, no int4 kernel -> reference math
    model = quantize(tiny_model("llada", seed=0), QuantConfig(method="rtn", w_bits=4, a_bits=16))
    assert _set_backend(model, "triton") == 0  # weight-only (A16)
    model = quantize(tiny_model("llada", seed=0), QuantConfig(method="rtn"))
    assert _set_backend(model, "auto") == 0  # auto on CPU tensors: reference path
