"""Dream's top_k / top_p (DecodeConfig): hand-computed filtered distributions and confidences, the chunked
fast path against the whole-vocabulary reference, validation, and a greedy top_k=50 decode against an
independent re-implementation of Dream's `diffusion_generate` loop on the same weights."""
from __future__ import annotations

import pytest
import torch

from faircalib.diffusion import DecodeConfig, generate, policies, resolve_config
from faircalib.diffusion.policies import dream_sample_tokens, filter_logits
from faircalib.errors import ConfigError
from faircalib.models import tiny_model

ROW = [2.0, 1.0, 0.5, 0.0, -1.0]  # full softmax .5630 .2071 .1256 .0762 .0280, cumulative .5630 .7701 .8958


def one(row=ROW, **kw):
    """dream_sample_tokens on a single position -> (confidence, token)."""
    conf, x0 = dream_sample_tokens(torch.tensor([[row]]), kw.pop("temperature", 0.0), None, **kw)
    return float(conf[0, 0]), int(x0[0, 0])


# ------------------------------------------------------------------------------------------ by hand
def test_top_k_keeps_the_k_largest():
    c, x = one(top_k=2)  # softmax([2, 1]) = .7311 .2689
    assert x == 0 and c == pytest.approx(0.7310586, abs=1e-6)
    c, _ = one(top_k=2, confidence="entropy")  # .7311 log .7311 + .2689 log .2689
    assert c == pytest.approx(-0.5822031, abs=1e-6)
    c, _ = one(top_k=3, confidence="topk_margin")  # softmax([2, 1, .5]) = .6285 .2312 .1402
    assert c == pytest.approx(0.6285317 - 0.2312239, abs=1e-6)


def test_top_p_keeps_the_token_that_crosses_the_mass():
    # cumulative .5630 .7701 .8958: with top_p = .8 the first three survive (the third crosses .8)
    c, x = one(top_p=0.8)
    assert x == 0 and c == pytest.approx(0.6285317, abs=1e-6)
    c, _ = one(top_p=0.8, confidence="topk_margin")
    assert c == pytest.approx(0.6285317 - 0.2312239, abs=1e-6)
    # top_p = .5 < .5630: only the first token (always kept) -> probability 1, margin 1, entropy 0
    assert one(top_p=0.5)[0] == pytest.approx(1.0)
    assert one(top_p=0.5, confidence="topk_margin")[0] == pytest.approx(1.0)
    assert one(top_p=0.5, confidence="entropy")[0] == pytest.approx(0.0, abs=1e-6)
    # top_p = 1 is no filter (Dream applies it only when < 1): the full softmax
    assert one(top_p=1.0)[0] == pytest.approx(0.5630212, abs=1e-6)


def test_top_p_then_top_k_and_temperature_first():
    assert one(top_p=0.8, top_k=2)[0] == pytest.approx(0.7310586, abs=1e-6)  # 3 survive top_p, then 2
    assert one(top_p=0.5, top_k=3)[0] == pytest.approx(1.0)  # top_k cannot bring back what top_p removed
    # temperature 2 divides first: softmax([1, .5, .25]) = .4810 .2918 .2272 (sampled, so check the set)
    logits = torch.tensor([ROW]).repeat(4000, 1)[None]  # (1, 4000, 5)
    g = torch.Generator().manual_seed(0)
    conf, x0 = dream_sample_tokens(logits, 2.0, g, top_k=3)
    counts = torch.bincount(x0[0], minlength=5).float() / 4000
    assert counts[3:].sum() == 0  # never outside the top 3
    assert counts[:3].tolist() == pytest.approx([0.4810243, 0.2917560, 0.2272198], abs=0.03)
    expected = torch.tensor([0.4810243, 0.2917560, 0.2272198])
    assert torch.allclose(conf[0], expected[x0[0]], atol=1e-6)  # confidence = probability of the sample


def test_ties_at_the_kth_value_are_kept_like_dream():
    # Dream's top_k keeps every logit >= the k-th largest: three tied tokens survive top_k=2
    c, x = one([1.0, 1.0, 1.0, 0.0], top_k=2)
    assert c == pytest.approx(1 / 3, abs=1e-6) and x in (0, 1, 2)
    ref = filter_logits(torch.tensor([1.0, 1.0, 1.0, 0.0]), 2, None)
    assert ref.tolist()[:3] == [1.0, 1.0, 1.0] and ref[3] == torch.finfo(torch.float32).min


def test_mask_column_stays_excluded():
    row = [2.0, float("-inf"), 1.0, 0.5]  # the [MASK] column as policy_logits leaves it
    assert one(row, top_k=2)[1] == 0 and one(row, top_k=2)[0] == pytest.approx(0.7310586, abs=1e-6)
    assert one(row, top_p=0.9)[1] == 0


@pytest.mark.parametrize("confidence", ["maskgit_plus", "topk_margin", "entropy"])
@pytest.mark.parametrize("top_k,top_p", [(5, None), (50, None), (None, 0.9), (50, 0.95), (3, 0.6), (1, None)])
def test_chunked_fast_path_equals_whole_vocabulary_reference(monkeypatch, confidence, top_k, top_p):
    monkeypatch.setattr(policies, "ROW_CHUNK_ELEMENTS", 700)  # 7 rows of V = 100 per chunk
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 11, 100, generator=g) * 3
    logits[1, 4, :10] = logits[1, 4].max() + 1  # ten tied maxima: the tie path
    conf, x0 = dream_sample_tokens(logits, 0.0, None, confidence=confidence, top_k=top_k, top_p=top_p)
    probs = torch.softmax(filter_logits(logits, top_k, top_p), dim=-1)  # (B, L, V) reference
    ref_conf, ref_x0 = probs.max(-1)
    if confidence == "topk_margin":
        top2 = probs.topk(2, dim=-1).values
        ref_conf = top2[..., 0] - top2[..., 1]
    elif confidence == "entropy":
        ref_conf = (probs * torch.log(probs + 1e-10)).sum(-1)
    assert torch.allclose(conf, ref_conf, atol=1e-6)
    assert torch.equal(probs.gather(-1, x0[..., None]), probs.max(-1, keepdim=True).values)  # an argmax
    untied = torch.ones_like(x0, dtype=torch.bool)
    untied[1, 4] = False
    assert torch.equal(x0[untied], ref_x0[untied])


# ------------------------------------------------------------------------------------------ config
@pytest.mark.parametrize("kw", [{"top_k": 0}, {"top_k": -2}, {"top_k": 2.5}, {"top_k": True}, {"top_p": 0.0},
                                {"top_p": 1.5}, {"top_p": "0.9"}])
def test_bad_values_name_the_field(kw):
    with pytest.raises(ConfigError, match=next(iter(kw))):
        DecodeConfig(policy="entropy", **kw)


def test_filters_are_dream_only_and_llada_is_unchanged():
    with pytest.raises(ConfigError, match="Dream policies"):
        DecodeConfig(policy="low_confidence", top_k=50)
    with pytest.raises(ConfigError, match="Dream policies"):
        DecodeConfig(policy="random", schedule="llada", top_p=0.9)
    llada = tiny_model("llada")
    with pytest.raises(ConfigError, match="Dream policies"):  # policy=None resolves to low_confidence
        resolve_config(llada, DecodeConfig(top_k=50))
    for policy in ("entropy", "maskgit_plus", "topk_margin", "origin"):
        DecodeConfig(policy=policy, top_k=50, top_p=0.95)
    assert DecodeConfig(policy="random", schedule="dream", top_k=5).top_k == 5
    assert DecodeConfig.from_dict({"policy": "entropy", "top_k": 50, "top_p": 0.95}).to_dict()["top_k"] == 50


# ------------------------------------------------------------------------------------------ reference decode
def reference_dream_decode(model, prompt: torch.Tensor, gen_length: int, steps: int, alg: str,
                           top_k: int | None, top_p: float | None, eps: float = 1e-3) -> torch.Tensor:
    """Dream's `diffusion_generate` (`_sample`, batch 1, greedy) written out plainly: the whole sequence
    through the model each step, shifted logits, the masked positions' logits filtered (top_p, then top_k)
    and turned into a confidence, int(n * (1 - s/t)) highest-confidence positions committed (all at the
    last step). As faircalib does (engine docstring), the [MASK] logit is excluded before the policy."""
    mask = model.mask_token_id
    x = torch.cat([prompt, torch.full((gen_length,), mask)])[None]  # (1, T)
    ts = torch.linspace(1, eps, steps + 1)
    low = torch.finfo(torch.float32).min
    for i in range(steps):
        mask_index = x == mask
        raw = model.head(_hidden(model, x))  # (1, T, V) raw (shifted) Dream logits
        logits = torch.cat([raw[:, :1], raw[:, :-1]], dim=1)  # position i scores token i
        ml = logits[mask_index].clone()  # (n, V)
        ml[:, mask] = float("-inf")
        if top_p is not None and top_p < 1:
            s_logits, s_idx = torch.sort(ml, descending=True)
            cum = torch.cumsum(torch.softmax(s_logits, -1), -1)
            rm = cum > top_p
            rm[:, 1:] = rm[:, :-1].clone()
            rm[:, 0] = False
            ml = ml.masked_fill(torch.zeros_like(rm).scatter(-1, s_idx, rm), low)
        if top_k is not None:
            ml = ml.masked_fill(ml < torch.topk(ml, min(top_k, ml.shape[-1]))[0][:, -1:], low)
        probs = torch.softmax(ml, -1)
        conf, x0 = probs.max(-1)
        if alg == "topk_margin":
            sp = torch.sort(probs, -1, descending=True).values
            conf = sp[:, 0] - sp[:, 1]
        elif alg == "entropy":
            conf = (probs * torch.log(probs + 1e-10)).sum(-1)
        n = int(mask_index.sum())
        t, s = ts[i], ts[i + 1]
        k = int(n * (1 - s / t)) if i < steps - 1 else n
        if k > 0:
            chosen = torch.topk(conf, k).indices
            new = torch.full_like(x0, mask)
            new[chosen] = x0[chosen]
            x[mask_index] = new
    return x[0, prompt.numel():]


def _hidden(model, x):
    ctx = model.context(x.shape[1])
    h = model.embed(x)
    for blk in model.blocks:
        h = blk(h, ctx)
    return h


def sharp_dream():
    """A tiny random Dream (vocab 160, so top_k=50 filters) in float64 with its matrices scaled by 3: the
    window positions' distributions differ clearly (the plain init gives near-tied confidences, whose order
    is decided by rounding), yet stay broad enough for top_k=50 to change entropy / probability ranks."""
    model = tiny_model("dream", seed=3, vocab_size=160, mask_token_id=159).double()
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.mul_(3.0)
    return model


@pytest.mark.parametrize("alg", ["entropy", "maskgit_plus", "topk_margin"])
def test_greedy_top_k_50_equals_reference_decode(alg):
    model = sharp_dream()
    prompts = [torch.tensor([5, 17, 33, 2]), torch.tensor([9, 9, 40, 41])]
    kw = {"gen_length": 12, "steps": 6, "policy": alg, "top_k": 50}
    ours = generate(model, prompts, **kw).tokens  # batched (equal lengths: no padding)
    for b, p in enumerate(prompts):
        ref = reference_dream_decode(model, p, 12, 6, alg, top_k=50, top_p=None)
        assert torch.equal(ours[b], ref), (alg, b)
        assert torch.equal(generate(model, [p], **kw).tokens[0], ref)
    # and with Dream's documented nucleus on top
    ref = reference_dream_decode(model, prompts[0], 12, 6, alg, top_k=50, top_p=0.95)
    assert torch.equal(generate(model, prompts[:1], top_p=0.95, **kw).tokens[0], ref)


@pytest.mark.parametrize("alg", ["entropy", "maskgit_plus"])
def test_top_k_changes_greedy_decodes(alg):
    """Proposed tokens are the argmax either way, but the confidence (hence which positions commit first,
    and what later positions see) is computed on the filtered distribution."""
    model = sharp_dream()
    p = [torch.tensor([5, 17, 33, 2])]
    a = generate(model, p, gen_length=12, steps=6, policy=alg)
    b = generate(model, p, gen_length=12, steps=6, policy=alg, top_k=50)
    assert not torch.equal(a.commit_step, b.commit_step)
    assert bool((a.commit_step >= 0).all()) and bool((b.commit_step >= 0).all())


def test_defaults_for_real_dream_and_llada_directories(tmp_path):
    """A Dream directory without a model card gets Dream's documented sampling (entropy, temperature 0.2,
    top_p 0.95) and the top_k = 50 its reference decode applies; every value now reaches DecodeConfig
    (nothing left "unsupported"). LLaDA's family defaults have no filter; the zoo cards record theirs."""
    from faircalib.models import model_decoding, save_model_dir

    save_model_dir(tiny_model("dream"), tmp_path / "dream")
    save_model_dir(tiny_model("llada"), tmp_path / "llada")
    d = model_decoding(str(tmp_path / "dream"))
    assert {k: d.values[k] for k in ("policy", "temperature", "top_p", "top_k")} == {
        "policy": "entropy", "temperature": 0.2, "top_p": 0.95, "top_k": 50}
    assert d.unsupported == {} and DecodeConfig.from_dict(d.values).top_k == 50
    ll = model_decoding(str(tmp_path / "llada"))
    assert ll.values.get("top_k") is None and ll.values.get("top_p") is None
    DecodeConfig.from_dict(ll.values)
    card = model_decoding("zoo:tiny-dream").values
    assert card.get("top_k") is None and card.get("top_p") is None  # the cards were measured unfiltered
