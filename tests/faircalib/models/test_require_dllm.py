"""A model of the wrong type at any library entry point: a TypeError that says what is expected and how
to load an official LLaDA / Dream directory (not an AttributeError from deep inside)."""
from __future__ import annotations

import pytest
import torch

from faircalib.calibrate import calibrate_layerwise, quantize
from faircalib.checkpoint import save_quantized
from faircalib.models import load_dllm, require_dllm, tiny_model
from faircalib.pipeline import MethodConfig, run_method
from faircalib.probe import ProbeConfig, probe_prior

HOW = r"load an official LLaDA or Dream directory with faircalib\.models\.load_dllm\('/path/to/LLaDA-8B-Instruct'\) \(native implementation, safetensors, no trust_remote_code\)"


@pytest.mark.parametrize("call, api", [
    (lambda m: quantize(m, "rtn"), r"faircalib\.calibrate\.quantize\(\)"),
    (lambda m: run_method(m, None, MethodConfig(method="rtn")), r"faircalib\.pipeline\.run_method\(\)"),
    (lambda m: probe_prior(m, None, ["a"], ProbeConfig(n_samples=1, steps=2, window=2)), r"faircalib\.probe \(Stage I\)"),
    (lambda m: save_quantized(m, "/nonexistent/never-created"), r"save_quantized\(\)"),  # nothing written
    (lambda m: calibrate_layerwise(m, torch.zeros(1, 4, dtype=torch.long), "flatquant"), r"calibrate_layerwise\(\)"),
])
def test_wrong_model_type_is_a_clear_type_error(call, api, tmp_path):
    wrong = torch.nn.Sequential(torch.nn.Linear(4, 4))
    with pytest.raises(TypeError, match=rf"{api} expects a faircalib DiffusionLM \(LLaDAModel or DreamModel\), "
                                        rf"got torch\.nn\.modules\.container\.Sequential; {HOW}"):
        call(wrong)


def test_a_loaded_dllm_and_a_transformers_model_get_their_own_hint(tiny_model_dir):
    loaded = load_dllm(tiny_model_dir)
    with pytest.raises(TypeError, match=r"got a LoadedDLLM; pass its \.model"):
        quantize(loaded, "rtn")
    from transformers import GPT2Config, GPT2LMHeadModel

    hf = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=16, n_positions=8))
    with pytest.raises(TypeError, match=r"GPT2LMHeadModel \(a transformers model: faircalib quantizes its own "
                                        r"native implementation of the same weights\)"):
        quantize(hf, "rtn")
    m = tiny_model("dream")
    assert require_dllm(m, "x") is m
