"""generate() on real tiny LLaDA / Dream models: monotonicity, determinism, batched == per-sample,
prompt formats, recording, the on_step hook, trajectories (states, save/load) and decode_text."""
from __future__ import annotations

import pytest
import torch

from faircalib.diffusion import POLICIES, RecordSpec, Trajectory, decode_text, generate, policy_logits
from faircalib.errors import ConfigError

GREEDY = ("low_confidence", "entropy", "maskgit_plus", "topk_margin")


def opts(policy: str, arch: str) -> dict:
    """Policy options valid on an `arch` model (LLaDA schedule gets two blocks)."""
    llada_sched = policy == "low_confidence" or (policy == "random" and arch == "llada")
    return {"steps": 8, "gen_length": 12, "block_length": 6 if llada_sched else None}


@pytest.mark.parametrize("arch", ["llada", "dream"])
@pytest.mark.parametrize("policy", POLICIES)
def test_monotone_and_complete(tiny_pair, prompts, arch, policy):
    m = tiny_pair[arch]
    seen = []
    traj = generate(m, prompts, policy, temperature=0.5 if policy in ("origin", "random") else 0.0, seed=1,
                    on_step=seen.append, **opts(policy, arch))
    B, L, S = len(prompts), 12, 8
    assert traj.tokens.shape == (B, L) and traj.commit_step.shape == (B, L)
    assert bool((traj.commit_step >= 0).all()) and bool((traj.commit_step < S).all())
    assert not bool((traj.tokens == m.mask_token_id).any())
    assert len(seen) == S
    ever = torch.zeros(B, L, dtype=torch.bool)
    for s, st in enumerate(seen):
        assert st.step == s and st.logits.shape == (B, L, m.config.vocab_size) and st.logits.dtype == torch.float32
        assert not bool((st.committed & ~st.masked).any())  # only masked positions are written
        assert not bool((st.committed & ever).any())  # each position exactly once
        ever |= st.committed
        assert torch.equal(st.masked, traj.masked_before(s))
        assert torch.equal(st.committed, traj.committed_at(s))
        assert torch.equal(st.ids, traj.state(s).ids)
        # written tokens stay: the window after step s agrees with the final tokens wherever committed
        done = ~traj.masked_before(s + 1)
        assert torch.equal(st.tokens[done], traj.tokens[done])
        assert bool((st.tokens[~done] == m.mask_token_id).all())
        assert torch.equal(st.written[st.committed], traj.tokens[st.committed])
    assert bool(ever.all())


@pytest.mark.parametrize("arch", ["llada", "dream"])
def test_default_policy_and_padding_format(tiny_pair, prompts, arch):
    m = tiny_pair[arch]
    traj = generate(m, prompts, steps=6, gen_length=6)
    assert traj.policy == m.default_policy
    assert traj.prompt_lengths.tolist() == [5, 9, 3, 7]
    # the same prompts as a left-padded tensor + attention mask give the identical trajectory
    state = traj.state(0)
    padded = state.ids[:, :traj.prompt_len].clone()
    padded[state.attention_mask[:, :traj.prompt_len] == 0] = 77  # pad content must not matter
    t2 = generate(m, padded, attention_mask=state.attention_mask[:, :traj.prompt_len], steps=6, gen_length=6)
    assert torch.equal(t2.tokens, traj.tokens) and torch.equal(t2.commit_step, traj.commit_step)
    with pytest.raises(ConfigError, match="left-padded"):
        generate(m, padded, attention_mask=state.attention_mask[:, :traj.prompt_len].flip(1), steps=6, gen_length=6)


@pytest.mark.parametrize("arch,policy", [("llada", p) for p in GREEDY] + [("dream", p) for p in GREEDY])
def test_batched_equals_per_sample_for_greedy(tiny_pair, prompts, arch, policy):
    m = tiny_pair[arch]
    o = opts(policy, arch)
    batched = generate(m, prompts, policy, **o)
    for b, p in enumerate(prompts):
        single = generate(m, [p], policy, **o)
        assert torch.equal(single.tokens[0], batched.tokens[b]), (b, policy)
        assert torch.equal(single.commit_step[0], batched.commit_step[b]), (b, policy)


@pytest.mark.parametrize("policy,extra", [("low_confidence", {"temperature": 0.0}),
                                          ("low_confidence", {"temperature": 0.9}),
                                          ("entropy", {"temperature": 0.7, "alg_temp": 0.3}),
                                          ("topk_margin", {"temperature": 0.0}),
                                          ("origin", {"temperature": 0.7}), ("random", {"temperature": 0.0})])
def test_deterministic_for_a_seed(tiny_pair, prompts, policy, extra):
    arch = "llada" if policy in ("low_confidence", "random") else "dream"
    m = tiny_pair[arch]
    kw = dict(opts(policy, arch), seed=5, record=RecordSpec(neg_entropy=True, margin=True), **extra)
    a, b = generate(m, prompts, policy, **kw), generate(m, prompts, policy, **kw)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.commit_step, b.commit_step)
    for k in a.records:
        assert torch.equal(a.records[k], b.records[k])
    if extra.get("temperature", 0) > 0 or policy in ("random", "origin"):
        c = generate(m, prompts, policy, **{**kw, "seed": 6})
        assert not (torch.equal(a.tokens, c.tokens) and torch.equal(a.commit_step, c.commit_step))


def test_global_rng_untouched(tiny_pair, prompts):
    torch.manual_seed(123)
    expect = torch.rand(3)
    torch.manual_seed(123)
    generate(tiny_pair["dream"], prompts, "origin", steps=4, gen_length=8, temperature=1.0)
    assert torch.equal(torch.rand(3), expect)


def test_records_shapes_dtypes_and_values(tiny_pair, prompts):
    m = tiny_pair["dream"]
    seen = []
    spec = RecordSpec(top1=True, top1_prob=True, neg_entropy=True, margin=True, probs=True)
    traj = generate(m, prompts, steps=5, gen_length=10, record=spec, on_step=seen.append)
    S, B, L, V = 5, 4, 10, m.config.vocab_size
    want = {"top1": torch.int32, "top1_prob": torch.float16, "neg_entropy": torch.float16,
            "margin": torch.float16, "probs": torch.float16}
    assert {k: v.dtype for k, v in traj.records.items()} == want
    for k, v in traj.records.items():
        assert tuple(v.shape) == ((S, B, L, V) if k == "probs" else (S, B, L))
    for s, st in enumerate(seen):
        p = torch.softmax(policy_logits(st.logits, m.mask_token_id), -1)  # (B, L, V)
        assert torch.equal(traj.records["top1"][s].long(), p.argmax(-1))
        torch.testing.assert_close(traj.records["top1_prob"][s].float(), p.max(-1).values, atol=1e-3, rtol=1e-3)
        ne = torch.special.xlogy(p, p).sum(-1)
        torch.testing.assert_close(traj.records["neg_entropy"][s].float(), ne, atol=2e-3, rtol=2e-3)
        top2 = p.topk(2, -1).values
        torch.testing.assert_close(traj.records["margin"][s].float(), top2[..., 0] - top2[..., 1], atol=1e-3,
                                   rtol=1e-3)
        assert float(traj.records["probs"][s][..., m.mask_token_id].abs().max()) == 0.0
    # only what is asked
    assert set(generate(m, prompts, steps=2, gen_length=4, record=True).records) == {"top1", "top1_prob"}
    assert set(generate(m, prompts, steps=2, gen_length=4, record=["margin"]).records) == {"margin"}
    assert generate(m, prompts, steps=2, gen_length=4).records == {}
    with pytest.raises(ConfigError, match="max_bytes"):
        generate(m, prompts, steps=2, gen_length=4, record=RecordSpec(probs=True, max_bytes=1000))
    with pytest.raises(ConfigError, match="record fields"):
        generate(m, prompts, steps=2, gen_length=4, record=["logits"])


def test_trajectory_save_load_select(tiny_pair, prompts, tmp_path):
    traj = generate(tiny_pair["llada"], prompts, steps=4, gen_length=8, block_length=4, seed=3, record=True)
    path = tmp_path / "t.safetensors"
    traj.save(path)
    back = Trajectory.load(path)
    assert back.config == traj.config and back.mask_token_id == traj.mask_token_id
    for name in ("prompt_ids", "prompt_mask", "tokens", "commit_step"):
        assert torch.equal(getattr(back, name), getattr(traj, name))
    assert torch.equal(back.records["top1"], traj.records["top1"])
    sub = traj.select([2, 0])
    assert torch.equal(sub.tokens, traj.tokens[[2, 0]]) and sub.records["top1"].shape[1] == 2
    assert torch.equal(sub.state(2).ids, traj.state(2).ids[[2, 0]])
    assert torch.equal(traj.sequences()[:, traj.prompt_len:], traj.tokens)
    with pytest.raises(ConfigError, match="step=9"):
        traj.state(9)


def test_decode_text_cuts_at_eos(byte_tokenizer):
    tok = byte_tokenizer
    eos = tok.eos_token_id
    row0 = tok.encode("the earth") + [eos] + tok.encode(" junk")
    row1 = tok.encode("12+34=46")
    n = max(len(row0), len(row1))
    ids = torch.tensor([row0 + [eos] * (n - len(row0)), row1 + [eos] * (n - len(row1))])
    assert decode_text(tok, ids) == ["the earth", "12+34=46"]
    assert decode_text(tok, ids, stop_at_eos=False)[0] == "the earth junk"  # specials skipped


@pytest.mark.parametrize("arch", ["llada", "dream"])
def test_tiny_model_smoke(arch):
    from faircalib.models import tiny_model

    m = tiny_model(arch, seed=1)
    traj = generate(m, [torch.tensor([3, 4, 5, 6])], steps=16, gen_length=16, record=True)
    assert traj.policy == ("low_confidence" if arch == "llada" else "entropy")
    assert traj.tokens.shape == (1, 16) and int(traj.commits_per_step().sum()) == 16
