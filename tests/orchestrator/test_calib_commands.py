"""`faircalib probe / prior-merge / quantize` on a tiny model directory with a tokenizer."""
from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from faircalib.orchestrator.cli import main

from faircalib.models import save_model_dir, tiny_model


@pytest.fixture
def model_dir(tmp_path, byte_tokenizer):
    tok = byte_tokenizer
    m = tiny_model("llada", vocab_size=len(tok), mask_token_id=tok.mask_token_id, pad_token_id=tok.pad_token_id,
                   eos_token_id=tok.eos_token_id)
    return str(save_model_dir(m, tmp_path / "model", tokenizer=tok))


def _json(out: str) -> dict:
    return json.loads(out[out.index("{"):])


def test_probe_shards_merge_and_quantize(model_dir, tmp_path):
    before = torch.get_num_threads()
    r = CliRunner()
    common = ["--n", "8", "--steps", "4", "--window", "4", "--probe-batch", "4"]
    try:
        whole = r.invoke(main, ["probe", model_dir, *common, "--out", str(tmp_path / "p")])
        assert whole.exit_code == 0, whole.output
        for a, b in ((0, 4), (4, 8)):
            res = r.invoke(main, ["probe", model_dir, *common, "--shard", f"{a}:{b}", "--out", str(tmp_path / f"s{a}")])
            assert res.exit_code == 0, res.output
        merged = r.invoke(main, ["prior-merge", str(tmp_path / "m"), str(tmp_path / "s4"), str(tmp_path / "s0")])
        assert merged.exit_code == 0, merged.output
        assert _json(merged.stdout)["cache_key"] == _json(whole.stdout)["cache_key"]
        bad = r.invoke(main, ["probe", model_dir, *common, "--shard", "2:6", "--out", str(tmp_path / "x")])
        assert bad.exit_code == 1 and "multiple of batch_size=4" in bad.output
        q = r.invoke(main, ["quantize", model_dir, "--prior", str(tmp_path / "m"), "--calib-n", "4",
                            "--calib-seq-len", "12", "--epochs", "1", "--out", str(tmp_path / "ckpt")])
        assert q.exit_code == 0, q.output
        info = _json(q.stdout)
        assert info["prior_key"] == _json(whole.stdout)["cache_key"] and len(info["block_losses"]) == 2
        from faircalib.checkpoint import load_quantized

        loaded = load_quantized(tmp_path / "ckpt")
        with torch.no_grad():
            assert torch.isfinite(loaded.model(torch.randint(3, 50, (1, 8)))).all()
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("damage", ["nan", "truncated"])
def test_quantize_and_inspect_fail_in_one_line_on_a_broken_model(model_dir, tmp_path, damage):
    """`faircalib quantize` exits non-zero on a NaN weight (naming the tensor) or a truncated
    model.safetensors (naming the file), and writes no checkpoint; `models inspect` names the file too."""
    import math
    from pathlib import Path

    from safetensors.torch import load_file, save_file

    f = Path(model_dir) / "model.safetensors"
    if damage == "nan":
        sd = load_file(f)
        sd["model.transformer.blocks.1.q_proj.weight"][0, 0] = math.nan
        save_file(sd, str(f), metadata={"format": "pt"})
        expect = "tensor model.transformer.blocks.1.q_proj.weight has 1 of 4096 values non-finite (nan)"
    else:
        f.write_bytes(f.read_bytes()[:1000])
        expect = f"{f}: not a readable safetensors file"
    out = tmp_path / "ckpt"
    res = CliRunner().invoke(main, ["quantize", model_dir, "--method", "rtn", "--out", str(out)])
    errors = [line for line in res.output.splitlines() if line.startswith("Error: ")]  # (after the settings line)
    assert res.exit_code == 1 and len(errors) == 1 and expect in errors[0], res.output
    assert "Traceback" not in res.output
    assert not out.exists()
    res = CliRunner().invoke(main, ["models", "inspect", model_dir])
    if damage == "truncated":
        assert res.exit_code == 1 and res.output.count("\n") == 1 and expect in res.output
    else:  # headers only: inspect describes it; loading is what refuses it
        assert res.exit_code == 0 and json.loads(res.output)["parameters"] > 0


@pytest.mark.parametrize("command", ["probe", "quantize", "eval"])
def test_device_option_is_validated_before_loading(model_dir, tmp_path, command):
    r = CliRunner()
    extra = ["--tasks", "faircalib_arith"] if command == "eval" else ["--out", str(tmp_path / "o")]
    bad = r.invoke(main, [command, model_dir, "--device", "tpu", *extra])
    assert bad.exit_code == 1 and "device='tpu' is not supported; use one of auto, cpu, cuda, cuda:N" in bad.output
    if not torch.cuda.is_available():
        no = r.invoke(main, [command, model_dir, "--device", "cuda:0", *extra])
        assert no.exit_code == 1 and "no CUDA device is available" in no.output
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("command", ["probe", "quantize", "eval"])
def test_dtype_option_is_validated_before_loading(model_dir, tmp_path, command):
    extra = ["--tasks", "faircalib_arith"] if command == "eval" else ["--out", str(tmp_path / "o")]
    bad = CliRunner().invoke(main, [command, model_dir, "--dtype", "int8", *extra])
    assert bad.exit_code == 1 and "dtype='int8' is not supported; use one of auto, bfloat16, float32, float16" \
        in bad.output and "Traceback" not in bad.output
    assert not (tmp_path / "o").exists()


def test_quantize_loads_the_model_in_the_requested_dtype(model_dir, tmp_path):
    before = torch.get_num_threads()
    try:
        q = CliRunner().invoke(main, ["quantize", model_dir, "--method", "rtn", "--dtype", "bfloat16",
                                      "--out", str(tmp_path / "ck")])
    finally:
        torch.set_num_threads(before)
    assert q.exit_code == 0, q.output
    assert _json(q.stdout)["dtype"] == "bfloat16"  # the float32 test model, loaded as bf16
    record = json.loads((tmp_path / "ck" / "quant_config.json").read_text())
    assert record["fp_dtype"] == "bfloat16"
    ev = CliRunner().invoke(main, ["eval", str(tmp_path / "ck"), "--tasks", "faircalib_arith", "--dtype", "float32"])
    assert ev.exit_code == 1 and "is a quantized checkpoint, which computes in the dtype it was calibrated in" \
        in ev.output


def test_quantize_reports_the_resolved_device(model_dir, tmp_path):
    before = torch.get_num_threads()
    try:
        q = CliRunner().invoke(main, ["quantize", model_dir, "--method", "flatquant", "--calib-n", "2",
                                      "--calib-seq-len", "8", "--epochs", "1", "--device", "auto",
                                      "--out", str(tmp_path / "ck")])
    finally:
        torch.set_num_threads(before)
    assert q.exit_code == 0, q.output
    assert _json(q.stdout)["device"] == ("cuda:0" if torch.cuda.is_available() else "cpu")
