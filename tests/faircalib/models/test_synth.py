"""Synthetic real-shape checkpoints: official config fields and special ids, official tensor names in a
sharded bf16 layout with an index, a tokenizer of the real vocabulary size, loading via load_dllm."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from faircalib.errors import ConfigError
from faircalib.models import (
    build_model,
    inspect_model,
    load_dllm,
    parse_config,
    synth_config,
    write_synthetic,
)
from faircalib.models.synth import DREAM_7B_CONFIG, LLADA_8B_CONFIG, SPECIAL_TOKENS, synth_tokenizer

# the width-shrinking overrides used to keep the on-disk test checkpoints small (vocabulary stays real)
SMALL = {"llada-8b": {"d_model": 64, "n_heads": 4, "n_kv_heads": 4, "mlp_hidden_size": 96},
         "dream-7b": {"hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
                      "intermediate_size": 96}}


def test_official_shapes_and_fields():
    llada = synth_config("llada-8b", 32)
    assert llada == LLADA_8B_CONFIG
    c = parse_config(llada)
    assert (c.arch, c.d_model, c.n_layers, c.n_heads, c.n_kv_heads, c.d_ff, c.vocab_size, c.mask_token_id) == \
        ("llada", 4096, 32, 32, 32, 12288, 126464, 126336)
    assert (c.eos_token_id, c.pad_token_id, c.rope_theta, c.tie_word_embeddings) == (126081, 126081, 500000.0, False)
    dream = synth_config("dream-7b", 28)
    assert dream == DREAM_7B_CONFIG
    c = parse_config(dream)
    assert (c.arch, c.d_model, c.n_layers, c.n_heads, c.n_kv_heads, c.d_ff, c.vocab_size, c.mask_token_id) == \
        ("dream", 3584, 28, 28, 4, 18944, 152064, 151666)
    assert (c.head_dim, c.qkv_bias, c.rope_theta, c.rms_norm_eps) == (128, True, 1000000.0, 1e-6)
    # fewer layers changes only the layer count (and Dream's max_window_layers)
    two = synth_config("dream-7b", 2)
    assert {k for k in two if two[k] != DREAM_7B_CONFIG[k]} == {"num_hidden_layers", "max_window_layers"}
    assert {k for k, v in synth_config("llada-8b", 2).items() if v != LLADA_8B_CONFIG[k]} == {"n_layers"}


@pytest.mark.parametrize("bad", [0, -1, "2", True])
def test_bad_layers_and_like(bad):
    with pytest.raises(ConfigError, match="layers"):
        synth_config("llada-8b", bad)
    with pytest.raises(ConfigError, match="llada-8b, dream-7b"):
        synth_config("llada-7b", 2)
    with pytest.raises(ConfigError, match="not in the official config"):
        synth_config("dream-7b", 2, {"hidden_dim": 8})


@pytest.mark.parametrize("like", ["llada-8b", "dream-7b"])
def test_tokenizer_has_real_vocab_and_official_special_ids(like):
    tok = synth_tokenizer(like)
    V = parse_config(synth_config(like, 1)).vocab_size
    assert len(tok) == V
    for i, text in SPECIAL_TOKENS[like].items():
        assert tok.convert_tokens_to_ids(text) == i
    mask = parse_config(synth_config(like, 1)).mask_token_id
    assert tok.mask_token_id == mask
    ids = tok("Noah had 3 sons.", add_special_tokens=False)["input_ids"]
    assert 0 < len(ids) < 16 and max(ids) < 4096 and tok.decode(ids) == "Noah had 3 sons."
    assert tok.decode([mask]) == SPECIAL_TOKENS[like][mask]


@pytest.mark.parametrize("like", ["llada-8b", "dream-7b"])
def test_write_and_load_sharded(tmp_path, like):
    out = write_synthetic(like, 2, tmp_path / "m", seed=3, max_shard_bytes=8_000_000, overrides=SMALL[like])
    index = json.loads((out / "model.safetensors.index.json").read_text())
    cfg = parse_config(json.loads((out / "config.json").read_text()))
    names = set(build_model(cfg, device="meta").state_dict())
    assert set(index["weight_map"]) == names  # every official tensor name, nothing else
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) >= 3 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    total = 0
    for s in shards:
        with safe_open(str(out / s), framework="pt") as f:
            for k in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                t = f.get_tensor(k)
                assert t.dtype == torch.bfloat16
                total += t.numel() * 2
    assert index["metadata"]["total_size"] == total
    info = inspect_model(out)
    assert (info["dtype"], info["shards"], info["layers"], info["vocab_size"]) == ("bf16", len(shards), 2,
                                                                                   cfg.vocab_size)
    loaded = load_dllm(out)
    assert loaded.model.dtype == torch.bfloat16  # the stored dtype is kept on CPU (no float32 up-cast)
    assert loaded.tokenizer.mask_token_id == loaded.mask_token_id == cfg.mask_token_id
    assert len(loaded.tokenizer) == cfg.vocab_size
    sd = loaded.model.state_dict()
    norm = "model.transformer.ln_f.weight" if like == "llada-8b" else "model.norm.weight"
    assert torch.equal(sd[norm], torch.ones_like(sd[norm]))
    emb = sd["model.transformer.wte.weight" if like == "llada-8b" else "model.embed_tokens.weight"].float()
    assert abs(emb.std().item() - 0.02) < 1e-3 and abs(emb.mean().item()) < 1e-3
    ids = loaded.tokenizer("In the beginning", return_tensors="pt")["input_ids"]
    logits = loaded.model(ids)
    assert logits.shape == (1, ids.shape[1], cfg.vocab_size) and torch.isfinite(logits).all()
    if like == "dream-7b":
        assert "model.layers.1.self_attn.k_proj.bias" in sd


def test_values_do_not_depend_on_sharding(tmp_path):
    a = write_synthetic("dream-7b", 1, tmp_path / "a", seed=5, max_shard_bytes=4_000_000,
                        overrides=SMALL["dream-7b"], tokenizer=False)
    b = write_synthetic("dream-7b", 1, tmp_path / "b", seed=5, overrides=SMALL["dream-7b"], tokenizer=False)
    c = write_synthetic("dream-7b", 1, tmp_path / "c", seed=6, overrides=SMALL["dream-7b"], tokenizer=False)
    sa, sb, sc = (load_dllm(p).model.state_dict() for p in (a, b, c))
    assert len(list(a.glob("*.safetensors"))) > 1 == len(list(b.glob("*.safetensors")))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["lm_head.weight"], sc["lm_head.weight"])


def test_a_bf16_model_on_a_cpu_without_bf16_units_is_warned_about(tmp_path, monkeypatch, caplog):
    import faircalib.devices as devices

    out = write_synthetic("dream-7b", 1, tmp_path / "m", overrides=SMALL["dream-7b"])
    monkeypatch.setattr(devices, "cpu_bf16_slowdown", lambda: 24.0)
    with caplog.at_level("WARNING", logger="faircalib.models.loader"):
        assert load_dllm(out).model.dtype == torch.bfloat16  # still loaded as stored: the warning names the fix
    assert any("24x slower than float32" in r.getMessage() and "--dtype float32" in r.getMessage()
               and "resources.dtype: float32" in r.getMessage() for r in caplog.records), caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="faircalib.models.loader"):  # the fix it names works
        assert load_dllm(out, dtype="float32").model.dtype == torch.float32
    assert not caplog.records
    monkeypatch.setattr(devices, "cpu_bf16_slowdown", lambda: 0.6)  # a CPU with bf16 units: nothing to say
    with caplog.at_level("WARNING", logger="faircalib.models.loader"):
        load_dllm(out, dtype=torch.bfloat16)
        load_dllm(out, dtype=torch.float32)
    assert not caplog.records
