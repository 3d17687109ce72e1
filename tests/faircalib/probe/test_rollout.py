"""Stage I driver on a tiny model: exact sharding, frontier weights from the real commit sets, cache keys."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from faircalib.diffusion import generate
from faircalib.errors import ConfigError
from faircalib.probe import (
    PositionPrior,
    PriorSettings,
    ProbeConfig,
    batch_seed,
    probe_data_hash,
    probe_prior,
    probe_priors,
    probe_shard,
)

CFG = ProbeConfig(n_samples=10, steps=6, window=6, batch_size=4, seed=3)


def test_sharded_probe_merges_to_the_single_pass_bit_for_bit(make_model, byte_tokenizer, prompts):
    m = make_model("dream")
    whole = probe_prior(m, byte_tokenizer, prompts, CFG)
    assert whole.n_samples == 10 and whole.sample_ids.tolist() == list(range(10))
    full_hash = probe_data_hash(prompts)
    parts = [probe_prior(m, byte_tokenizer, prompts[a:b], CFG, sample_offset=a, data_hash=full_hash)
             for a, b in ((0, 4), (4, 8), (8, 10))]
    for order in ([0, 1, 2], [2, 0, 1]):
        merged = PositionPrior.merge([parts[i] for i in order])
        assert torch.equal(merged.per_sample, whole.per_sample)
        assert torch.equal(merged.curve, whole.curve)
        assert merged.cache_key() == whole.cache_key()
    # a shard that does not start on a global batch boundary cannot be exact: refused
    with pytest.raises(ConfigError, match="sample_offset=2 must be a non-negative multiple of batch_size=4"):
        probe_prior(m, byte_tokenizer, prompts[2:6], CFG, sample_offset=2)


def test_probe_shard_of_a_prompt_source_merges_to_probe_prior(make_model, byte_tokenizer):
    m = make_model("llada")
    cfg = dataclasses.replace(CFG, n_samples=8, prompts="builtin:tasks:probe")
    whole = probe_prior(m, byte_tokenizer, None, cfg)
    merged = PositionPrior.merge([probe_shard(m, byte_tokenizer, cfg, 4, 8), probe_shard(m, byte_tokenizer, cfg, 0, 4)])
    assert torch.equal(merged.per_sample, whole.per_sample) and merged.meta == whole.meta


def test_frontier_weights_come_from_the_random_commit_sets(make_model, byte_tokenizer, prompts):
    """beta = 0: the prior is exactly alpha(step of commit) per position, normalised — rebuilt here from an
    independent generate() call with the same batch seed; and random commit sets do not depend on the model."""
    settings = PriorSettings(beta=0.0)
    cfg = dataclasses.replace(CFG, prior=settings)
    m = make_model("llada")
    prior = probe_prior(m, byte_tokenizer, prompts[:4], cfg)
    ids = [torch.tensor(byte_tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts[:4]]
    traj = generate(m, ids, policy="random", steps=6, gen_length=6, seed=batch_seed(cfg.seed, 0))
    alpha = torch.tensor([settings.alpha(s, 6) for s in range(6)], dtype=torch.float64)
    w = alpha[traj.commit_step.long()]  # (B, L): each position is hit exactly once
    torch.testing.assert_close(prior.per_sample, w / w.mean(-1, keepdim=True))
    other = probe_prior(make_model("llada", seed=9), byte_tokenizer, prompts[:4], cfg)
    assert torch.equal(other.per_sample, prior.per_sample)
    assert other.cache_key() != prior.cache_key()  # different weights, different key


def test_variants_share_rollouts(make_model, byte_tokenizer, prompts):
    m = make_model("dream")
    variants = {"both": PriorSettings(), "late": PriorSettings(schedule="late"),
                "rel": PriorSettings(schedule="none", reliability="margin")}
    many = probe_priors(m, byte_tokenizer, prompts[:5], CFG, variants)
    for name, s in variants.items():
        one = probe_prior(m, byte_tokenizer, prompts[:5], dataclasses.replace(CFG, prior=s))
        assert torch.equal(many[name].per_sample, one.per_sample) and many[name].cache_key() == one.cache_key()
    assert not torch.equal(many["both"].per_sample, many["late"].per_sample)
    torch.testing.assert_close(many["rel"].per_sample.mean(-1), torch.ones(5, dtype=torch.float64))


def test_cache_key_changes_with_every_setting(make_model, byte_tokenizer, prompts):
    m = make_model("llada")
    base_cfg = ProbeConfig(n_samples=4, steps=4, window=4, batch_size=4, seed=0)
    key = probe_prior(m, byte_tokenizer, prompts[:4], base_cfg).cache_key()
    changes = [{"steps": 2}, {"window": 8, "steps": 8}, {"block_length": 2}, {"seed": 1}, {"temperature": 0.5},
               {"batch_size": 2}, {"prior": PriorSettings(beta=0.5)}, {"prior": PriorSettings(schedule="late")},
               {"prior": PriorSettings(gamma=3.0)}, {"prior": PriorSettings(a_max=2.0)},
               {"prior": PriorSettings(reliability="neg_entropy")}]
    keys = {key}
    for ch in changes:
        k = probe_prior(m, byte_tokenizer, prompts[:4], dataclasses.replace(base_cfg, **ch)).cache_key()
        assert k not in keys, ch
        keys.add(k)
    assert probe_prior(m, byte_tokenizer, prompts[4:8], base_cfg).cache_key() not in keys  # other prompts
    m2 = make_model("llada")
    with torch.no_grad():
        m2.blocks[0].role("q").weight[0, 0] += 1e-3
    assert probe_prior(m2, byte_tokenizer, prompts[:4], base_cfg).cache_key() not in keys  # other weights
    assert probe_prior(m, byte_tokenizer, prompts[:4], base_cfg).cache_key() == key  # deterministic


def test_probe_config_validation():
    with pytest.raises(ConfigError, match="^block_length: 3 must divide window=8$"):  # the probe's field names
        ProbeConfig(window=8, steps=8, block_length=3)
    with pytest.raises(ConfigError, match="^batch_size: expected an integer >= 1, got 0$"):
        ProbeConfig(batch_size=0)
    with pytest.raises(ConfigError, match=r"^prior\.beta: schedule 'none' with beta 0"):
        ProbeConfig.from_dict({"prior": {"schedule": "none", "beta": 0.0}})
    with pytest.raises(ConfigError, match=r"^prior\.reliability: 'probability' is not allowed"):  # one spelling
        ProbeConfig.from_dict({"prior": {"reliability": "probability"}})
    cfg = ProbeConfig(steps=16, window=16, prior=PriorSettings(beta=0.0))
    assert ProbeConfig.from_dict(cfg.to_dict()) == cfg
    assert ProbeConfig().n_samples == 512 and ProbeConfig().steps == 256 and ProbeConfig().window == 256


def test_cache_key_is_known_before_probing(make_model, byte_tokenizer, tmp_path):
    """probe_cache_key (what the job service looks its prior cache up with) equals the key of the prior
    the probe then produces, for both model families' default schedules; no Stage II setting enters it."""
    from faircalib.models import save_model_dir, weights_hash
    from faircalib.probe import probe_cache_key

    for arch in ("llada", "dream"):
        m = make_model(arch)
        d = save_model_dir(m, tmp_path / arch, tokenizer=byte_tokenizer)
        cfg = ProbeConfig(n_samples=4, steps=4, window=4, batch_size=4)
        key = probe_cache_key(cfg, m.default_policy, weights_hash(d))
        prior = probe_prior(m, byte_tokenizer, None, cfg, model_hash=weights_hash(d))
        assert prior.cache_key() == key
        assert probe_cache_key(cfg.replace(seed=1), m.default_policy, weights_hash(d)) != key
