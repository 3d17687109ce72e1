"""Native LLaDA / Dream: logits against an independent reference, official names, loading paths."""
from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import save_file

from faircalib.errors import ModelLoadError
from faircalib.models import (build_model, inspect_model, load_dllm, parse_config, save_model_dir, tiny_config,
                              tiny_model)


# ----------------------------------------------------------------------------- reference
def reference_raw_logits(sd: dict, cfg, ids: torch.Tensor, names: dict) -> torch.Tensor:
    """A deliberately plain implementation from the state dict: explicit per-head loops, RoPE via
    complex rotation of (x_j, x_{j+hd/2}) pairs, softmax attention without any mask, float64."""
    sd = {k: v.double() for k, v in sd.items()}
    H, Hkv, hd = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    T = ids.shape[0]

    def rms(x, w):
        return w * x / torch.sqrt((x * x).mean(-1, keepdim=True) + cfg.rms_norm_eps)

    def lin(x, key):
        y = x @ sd[key + ".weight"].T
        return y + sd[key + ".bias"] if key + ".bias" in sd else y

    def rope(x):  # x: (T, hd)
        half = hd // 2
        z = torch.complex(x[:, :half], x[:, half:])
        freq = torch.tensor([cfg.rope_theta ** (-2 * j / hd) for j in range(half)], dtype=torch.float64)
        ang = torch.arange(T, dtype=torch.float64)[:, None] * freq[None, :]
        z = z * torch.polar(torch.ones_like(ang), ang)
        return torch.cat([z.real, z.imag], dim=-1)

    x = sd[names["embed"]][ids]
    for i in range(cfg.n_layers):
        p = names["block"].format(i=i)
        h = rms(x, sd[p + names["attn_norm"]])
        q, k, v = lin(h, p + names["q"]), lin(h, p + names["k"]), lin(h, p + names["v"])
        heads = []
        for head in range(H):
            kvh = head // (H // Hkv)
            qh = rope(q[:, head * hd:(head + 1) * hd])
            kh = rope(k[:, kvh * hd:(kvh + 1) * hd])
            vh = v[:, kvh * hd:(kvh + 1) * hd]
            att = torch.softmax(qh @ kh.T / math.sqrt(hd), dim=-1)
            heads.append(att @ vh)
        x = x + lin(torch.cat(heads, dim=-1), p + names["o"])
        h = rms(x, sd[p + names["mlp_norm"]])
        g, u = lin(h, p + names["gate"]), lin(h, p + names["up"])
        x = x + lin(g / (1 + torch.exp(-g)) * u, p + names["down"])
    x = rms(x, sd[names["norm"]])
    return x @ sd[names["head"]].T


LLADA_NAMES = dict(embed="model.transformer.wte.weight", block="model.transformer.blocks.{i}.",
                   attn_norm="attn_norm.weight", q="q_proj", k="k_proj", v="v_proj", o="attn_out",
                   mlp_norm="ff_norm.weight", gate="ff_proj", up="up_proj", down="ff_out",
                   norm="model.transformer.ln_f.weight", head="model.transformer.ff_out.weight")
DREAM_NAMES = dict(embed="model.embed_tokens.weight", block="model.layers.{i}.",
                   attn_norm="input_layernorm.weight", q="self_attn.q_proj", k="self_attn.k_proj",
                   v="self_attn.v_proj", o="self_attn.o_proj", mlp_norm="post_attention_layernorm.weight",
                   gate="mlp.gate_proj", up="mlp.up_proj", down="mlp.down_proj", norm="model.norm.weight",
                   head="lm_head.weight")


@pytest.mark.parametrize("arch,names", [("llada", LLADA_NAMES), ("dream", DREAM_NAMES)])
def test_logits_match_independent_reference(arch, names):
    model = tiny_model(arch, seed=3)
    ids = torch.randint(0, 96, (1, 11), generator=torch.Generator().manual_seed(0))
    ref_raw = reference_raw_logits(model.state_dict(), model.config, ids[0], names)  # (T, V)
    got = model(ids)[0].double()
    if arch == "dream":  # aligned[i] = raw[i-1], aligned[0] = raw[0]
        expected = torch.cat([ref_raw[:1], ref_raw[:-1]], dim=0)
    else:
        expected = ref_raw
    assert got.shape == (11, 96)
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-4)


def test_gqa_is_exercised_and_matters():
    model = tiny_model("llada", seed=1)
    assert model.config.n_kv_heads == 2 and model.config.n_heads == 4
    assert model.blocks[0].k_proj.weight.shape == (2 * 16, 64)
    ids = torch.randint(0, 96, (1, 9), generator=torch.Generator().manual_seed(1))
    base = model(ids)
    # perturb only kv head 1: query heads 2 and 3 read it, so the output must change
    with torch.no_grad():
        model.blocks[0].k_proj.weight[16:] += 0.5
    assert (model(ids) - base).abs().max() > 1e-3


@pytest.mark.parametrize("arch", ["llada", "dream"])
def test_attention_is_bidirectional(arch):
    model = tiny_model(arch, seed=2)
    ids = torch.randint(0, 90, (1, 12), generator=torch.Generator().manual_seed(2))
    changed = ids.clone()
    changed[0, -1] = (changed[0, -1] + 7) % 90
    a, b = model(ids), model(changed)
    # the earliest positions see the last token: no causal mask
    assert (a[0, :3] - b[0, :3]).abs().max() > 1e-4


def test_dream_logits_are_realigned():
    model = tiny_model("dream", seed=4)
    ids = torch.randint(0, 90, (2, 10), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        h = model.embed(ids)
        ctx = model.context(10)
        for blk in model.blocks:
            h = blk(h, ctx)
        raw = model.lm_head(model.final_norm(h))
    aligned = model(ids)
    torch.testing.assert_close(aligned[:, 1:], raw[:, :-1])
    torch.testing.assert_close(aligned[:, 0], raw[:, 0])


@pytest.mark.parametrize("arch", ["llada", "dream"])
def test_window_equals_slice_of_full_logits(arch):
    model = tiny_model(arch, seed=5)
    ids = torch.randint(0, 90, (2, 14), generator=torch.Generator().manual_seed(5))
    full = model(ids)
    torch.testing.assert_close(model(ids, window=(6, 14)), full[:, 6:14])
    torch.testing.assert_close(model(ids, window=(0, 3)), full[:, 0:3])


@pytest.mark.parametrize("arch", ["llada", "dream"])
def test_left_padding_matches_unpadded(arch):
    model = tiny_model(arch, seed=6)
    ids = torch.randint(2, 90, (1, 9), generator=torch.Generator().manual_seed(6))
    pad = 4
    padded = torch.cat([torch.zeros(1, pad, dtype=torch.long), ids], dim=1)
    mask = torch.cat([torch.zeros(1, pad), torch.ones(1, 9)], dim=1)
    # Dream's aligned logit for a sequence's first token reads the raw logit of the position before it (a pad
    # here); every later position, i.e. everything a decoder's answer window uses, must match exactly.
    skip = 1 if arch == "dream" else 0
    got = model(padded, attention_mask=mask)[:, pad + skip:]
    torch.testing.assert_close(got, model(ids)[:, skip:], atol=1e-5, rtol=1e-4)


def test_official_parameter_names():
    llada = set(tiny_model("llada").state_dict())
    assert {"model.transformer.wte.weight", "model.transformer.ln_f.weight", "model.transformer.ff_out.weight",
            "model.transformer.blocks.1.attn_out.weight", "model.transformer.blocks.0.ff_out.weight",
            "model.transformer.blocks.0.ff_proj.weight", "model.transformer.blocks.0.up_proj.weight",
            "model.transformer.blocks.0.attn_norm.weight", "model.transformer.blocks.0.ff_norm.weight"} <= llada
    assert not any("bias" in k or "act_transforms" in k for k in llada)
    dream = set(tiny_model("dream").state_dict())
    assert {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight",
            "model.layers.0.self_attn.q_proj.bias", "model.layers.0.self_attn.o_proj.weight",
            "model.layers.1.mlp.down_proj.weight", "model.layers.0.input_layernorm.weight",
            "model.layers.0.post_attention_layernorm.weight"} <= dream
    assert "model.layers.0.self_attn.o_proj.bias" not in dream


# 8B/7B official configs (fields as published) must parse and produce the official tensor shapes
LLADA_8B = {"model_type": "llada", "architectures": ["LLaDAModelLM"], "activation_type": "silu", "alibi": False,
            "attention_layer_norm": False, "block_type": "llama", "d_model": 4096, "embedding_size": 126464,
            "eos_token_id": 126081, "include_bias": False, "include_qkv_bias": False, "input_emb_norm": False,
            "layer_norm_type": "rms", "layer_norm_with_affine": True, "mask_token_id": 126336,
            "max_sequence_length": 4096, "mlp_hidden_size": 12288, "mlp_ratio": 4, "multi_query_attention": None,
            "n_heads": 32, "n_kv_heads": 32, "n_layers": 32, "pad_token_id": 126081, "rms_norm_eps": 1e-05,
            "rope": True, "rope_theta": 500000.0, "scale_logits": False, "vocab_size": 126464,
            "weight_tying": False, "use_cache": False}
DREAM_7B = {"model_type": "Dream", "architectures": ["DreamModel"], "hidden_act": "silu", "hidden_size": 3584,
            "intermediate_size": 18944, "mask_token_id": 151666, "max_position_embeddings": 131072,
            "num_attention_heads": 28, "num_hidden_layers": 28, "num_key_value_heads": 4, "pad_token_id": 151643,
            "eos_token_id": 151643, "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 1000000.0,
            "tie_word_embeddings": False, "use_sliding_window": False, "vocab_size": 152064}


def test_real_config_shapes_on_meta_device():
    llada = build_model(parse_config(LLADA_8B), device="meta")
    shapes = {k: tuple(v.shape) for k, v in llada.state_dict().items()}
    assert shapes["model.transformer.wte.weight"] == (126464, 4096)
    assert shapes["model.transformer.blocks.31.ff_proj.weight"] == (12288, 4096)
    assert shapes["model.transformer.blocks.31.ff_out.weight"] == (4096, 12288)
    assert shapes["model.transformer.ff_out.weight"] == (126464, 4096)
    assert len(shapes) == 3 + 32 * 9
    assert 8.0e9 < llada.num_parameters() < 8.05e9
    dream = build_model(parse_config(DREAM_7B), device="meta")
    shapes = {k: tuple(v.shape) for k, v in dream.state_dict().items()}
    assert shapes["model.layers.0.self_attn.k_proj.weight"] == (512, 3584)
    assert shapes["model.layers.0.self_attn.k_proj.bias"] == (512,)
    assert shapes["model.layers.27.mlp.down_proj.weight"] == (3584, 18944)
    assert 7.5e9 < dream.num_parameters() < 7.7e9


# ----------------------------------------------------------------------------- save / load
@pytest.mark.parametrize("arch", ["llada", "dream"])
@pytest.mark.parametrize("shard", [None, 20_000])
def test_save_load_roundtrip(tmp_path, arch, shard, byte_tokenizer):
    model = tiny_model(arch, seed=7)
    save_model_dir(model, tmp_path, tokenizer=byte_tokenizer, max_shard_bytes=shard)
    files = sorted(p.name for p in tmp_path.glob("*.safetensors"))
    if shard:
        assert len(files) > 1 and (tmp_path / "model.safetensors.index.json").is_file()
    else:
        assert files == ["model.safetensors"]
    loaded = load_dllm(tmp_path)
    ids = torch.randint(0, 90, (2, 8), generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(loaded.model(ids), model(ids), atol=0, rtol=0)
    assert loaded.mask_token_id == 95 and loaded.default_policy == model.default_policy
    assert loaded.tokenizer.decode(loaded.tokenizer("the earth")["input_ids"]) == "the earth"
    assert loaded.adapter.n_blocks == 2
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["model_type"] == ("llada" if arch == "llada" else "Dream")


def test_inspect_reports_official_json(tmp_path):
    model = tiny_model("dream", seed=0)
    save_model_dir(model, tmp_path, dtype=torch.bfloat16)
    info = inspect_model(tmp_path)
    assert info["architecture"] == "dream" and info["model_type"] == "Dream"
    assert info["layers"] == 2 and info["parameters"] == model.num_parameters()
    assert info["dtype"] == "bf16" and info["weight_bytes"] == 2 * model.num_parameters()
    assert info["logits_shifted"] is True and info["default_policy"] == "entropy"


def test_cli_models_inspect(tmp_path):
    from click.testing import CliRunner

    from faircalib.orchestrator.cli import main

    save_model_dir(tiny_model("llada"), tmp_path)
    res = CliRunner().invoke(main, ["models", "inspect", str(tmp_path)])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert info["architecture"] == "llada" and info["layers"] == 2 and info["n_kv_heads"] == 2
    assert info["parameters"] == tiny_model("llada").num_parameters()
    bad = CliRunner().invoke(main, ["models", "inspect", str(tmp_path / "nope")])
    assert bad.exit_code == 1 and "does not exist" in bad.output and "Traceback" not in bad.output


# ----------------------------------------------------------------------------- bad input
def _saved(tmp_path, arch="llada"):
    save_model_dir(tiny_model(arch), tmp_path)
    return tmp_path


def test_missing_directory_and_config(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_dllm(tmp_path / "missing")
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_dllm(tmp_path)


def test_unknown_model_type_lists_supported(tmp_path):
    d = _saved(tmp_path)
    (d / "config.json").write_text(json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(ModelLoadError, match=r"unknown model_type.*'gpt2'.*supported: llada.*Dream"):
        load_dllm(d)


def test_unsupported_feature_refused(tmp_path):
    d = _saved(tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg["alibi"] = True
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="unsupported alibi=True"):
        load_dllm(d)


def test_missing_extra_and_misshaped_tensors(tmp_path):
    sd = tiny_model("llada").state_dict()
    d = _saved(tmp_path)
    save_file({k: v for k, v in sd.items() if "blocks.1.up_proj" not in k}, str(d / "model.safetensors"))
    with pytest.raises(ModelLoadError, match="tensors missing.*blocks.1.up_proj"):
        load_dllm(d)
    save_file({**sd, "model.transformer.blocks.0.extra.weight": torch.zeros(2)}, str(d / "model.safetensors"))
    with pytest.raises(ModelLoadError, match="unexpected tensors.*extra"):
        load_dllm(d)
    bad = dict(sd)
    bad["model.transformer.blocks.0.q_proj.weight"] = torch.zeros(8, 64)
    save_file(bad, str(d / "model.safetensors"))
    with pytest.raises(ModelLoadError, match=r"shape \(8, 64\).*\(64, 64\)"):
        load_dllm(d)


def test_pickle_only_checkpoint_refused(tmp_path):
    d = _saved(tmp_path)
    (d / "model.safetensors").unlink()
    torch.save(tiny_model("llada").state_dict(), d / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="only pickle checkpoints.*pytorch_model.bin.*safetensors"):
        load_dllm(d)


def test_missing_shard_and_bad_json(tmp_path):
    d = tmp_path / "m"
    save_model_dir(tiny_model("dream"), d, max_shard_bytes=20_000)
    next(iter(sorted(d.glob("model-*.safetensors")))).unlink()
    with pytest.raises(ModelLoadError, match="shards listed.*missing"):
        load_dllm(d)
    (d / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="invalid JSON"):
        load_dllm(d)


def test_unknown_zoo_name():
    with pytest.raises(ModelLoadError, match="unknown zoo model 'zoo:nope'"):
        load_dllm("zoo:nope")


def test_tiny_config_validation():
    with pytest.raises(ModelLoadError, match="not divisible by n_kv_heads"):
        tiny_config(n_kv_heads=3)
    with pytest.raises(ModelLoadError, match="mask_token_id=200 is outside"):
        tiny_config(mask_token_id=200)


@pytest.mark.parametrize("damage", ["truncated", "header", "empty"])
def test_corrupt_safetensors_names_the_file_and_the_fix(tmp_path, damage):
    """A cut-short or overwritten model.safetensors: one-line ModelLoadError naming the file (loading and
    inspecting), not a SafetensorError traceback."""
    path = tmp_path / "m"
    save_model_dir(tiny_model("llada", seed=0), path)
    f = path / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes({"truncated": data[: len(data) // 2], "header": data[:5], "empty": b""}[damage])
    for call in (load_dllm, inspect_model):
        with pytest.raises(ModelLoadError) as e:
            call(path)
        msg = str(e.value)
        assert msg.startswith(f"{f}: not a readable safetensors file (Error while deserializing header: ")
        assert msg.endswith("re-download or re-export it (a safetensors file that was cut short or overwritten)")
        assert "\n" not in msg
