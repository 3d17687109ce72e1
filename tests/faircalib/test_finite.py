"""faircalib.finite: the first non-finite tensor / metric is named, NaN stderr of tiny samples is not a
failure; and the stage boundaries that use it: loading refuses NaN/inf weights, quantize() refuses a
non-finite quantized model, probing refuses non-finite rollout logits (no prior of a broken model)."""
from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from faircalib.errors import NonFiniteError
from faircalib.finite import (
    check_metrics,
    check_module,
    check_tensors,
    describe_non_finite,
    first_non_finite_metric,
)
from faircalib.models import load_dllm, save_model_dir, tiny_model


def test_describe_and_check_tensors_name_the_first_bad_tensor():
    ok, bad = torch.ones(4), torch.tensor([1.0, math.nan, math.inf, -math.inf])
    assert describe_non_finite(ok) is None and describe_non_finite(torch.arange(3)) is None
    assert describe_non_finite(bad) == "3 of 4 values non-finite (nan, inf)"
    with pytest.raises(NonFiniteError, match=r"^stage x: tensor b has 3 of 4 values non-finite \(nan, inf\); fix it$"):
        check_tensors([("a", ok), ("b", bad), ("c", bad)], where="stage x", fix="fix it")
    m = torch.nn.Linear(2, 2)
    m.register_buffer("scale", torch.tensor([1.0, math.nan]))
    with pytest.raises(NonFiniteError, match="tensor scale has 1 of 2 values non-finite"):
        check_module(m, where="q", fix="f")


def test_first_non_finite_metric_walks_nested_results_and_skips_stderr():
    res = {"fidelity": {"fp": {"nll": 2.1, "per_ratio_nll": {"0.15": 2.0, "0.5": math.nan}}},
           "mc": {"quantized": {"acc": 0.5, "acc_stderr": math.nan, "n_samples": 1, "flag": True}}}
    assert first_non_finite_metric(res) == ("fidelity.fp.per_ratio_nll.0.5", res["fidelity"]["fp"]["per_ratio_nll"]["0.5"])
    res["fidelity"]["fp"]["per_ratio_nll"]["0.5"] = 1.0
    assert first_non_finite_metric(res) is None  # acc_stderr NaN (one sample) is not a model failure
    res["mc"]["quantized"]["curve"] = [0.1, math.inf]
    with pytest.raises(NonFiniteError, match=r"^evaluate: metric mc.quantized.curve\[1\] is inf; see log$"):
        check_metrics(res, where="evaluate", fix="see log")


@pytest.fixture
def nan_model_dir(tmp_path, byte_tokenizer):
    """A tiny LLaDA saved with one NaN in block 0's q_proj (as the issue's report)."""
    path = tmp_path / "nan-llada"
    save_model_dir(tiny_model("llada", seed=0, vocab_size=len(byte_tokenizer), mask_token_id=byte_tokenizer.mask_token_id),
                   path, tokenizer=byte_tokenizer)
    sd = load_file(path / "model.safetensors")
    sd["model.transformer.blocks.0.q_proj.weight"][3, 5] = math.nan
    save_file(sd, str(path / "model.safetensors"), metadata={"format": "pt"})
    return path


def test_loading_refuses_nan_weights_naming_file_and_tensor(nan_model_dir):
    with pytest.raises(NonFiniteError) as e:
        load_dllm(nan_model_dir)
    assert str(e.value) == (f"loading {nan_model_dir / 'model.safetensors'}: tensor model.transformer.blocks.0.q_proj."
                            "weight has 1 of 4096 values non-finite (nan); the weights are corrupt or diverged; "
                            "re-export or re-download them")


def test_quantize_refuses_a_non_finite_quantized_model(nan_model_dir):
    from faircalib.calibrate import quantize
    from faircalib.quant import QuantConfig

    m = load_dllm(nan_model_dir, check_finite=False)  # past the loading check on purpose
    with pytest.raises(NonFiniteError, match=r"^quantize \(rtn W4A4\): the quantized model: tensor "
                                             r"model.transformer.blocks.0.q_proj.w_scale has 1 of 64 values"):
        quantize(m.model, QuantConfig(method="rtn", w_bits=4, a_bits=4))


def overflowing(model):
    """Finite weights whose activations overflow float32 (block 0's MLP x 1e30): NaN logits."""
    for name, p in model.named_parameters():
        if name.endswith(("blocks.0.up_proj.weight", "blocks.0.ff_out.weight")):
            p.data.mul_(1e30)
    return model


def test_probe_refuses_non_finite_logits_instead_of_a_finite_looking_prior(byte_tokenizer):
    from faircalib.probe import ProbeConfig, probe_prior

    tok = byte_tokenizer
    model = overflowing(tiny_model("llada", seed=0, vocab_size=len(tok), mask_token_id=tok.mask_token_id,
                                   pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id))
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())
    cfg = ProbeConfig(n_samples=4, steps=4, window=4, batch_size=4)
    with pytest.raises(NonFiniteError, match=r"^probe: the model's logits at diffusion step 0 of probe batch 0 have "
                                             r"\d+ of \d+ values non-finite \(nan"):
        probe_prior(model, tok, ["1+1=", "2+2=", "ab", "cd"], cfg)


def test_describe_non_finite_counts_across_chunks_and_dtypes(monkeypatch):
    """The check runs CHUNK elements at a time (no whole-tensor float32/bool copies): a NaN in the last
    chunk and an inf in the first are both found and counted, in bf16 and float32, and a non-contiguous
    tensor is checked too."""
    import faircalib.finite as fin

    monkeypatch.setattr(fin, "CHUNK", 7)
    for dtype in (torch.bfloat16, torch.float32):
        t = torch.zeros(10, 5, dtype=dtype)
        assert fin.describe_non_finite(t) is None
        t[9, 4] = float("nan")
        t[0, 1] = float("inf")
        t[0, 2] = float("-inf")
        assert fin.describe_non_finite(t) == "3 of 50 values non-finite (nan, inf)"
        assert fin.describe_non_finite(t.t()) == "3 of 50 values non-finite (nan, inf)"  # non-contiguous
        assert fin.describe_non_finite(t[1:9]) is None
    z = torch.zeros(4, dtype=torch.complex64)
    z[2] = complex(float("nan"), float("nan"))
    assert fin.describe_non_finite(z) == "1 of 4 values non-finite (nan)"
