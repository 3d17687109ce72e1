"""QuaRot rotation: function preserved (logits equal) on LLaDA and Dream for every rotation kind, and the
rotation actually spreads activation outliers at the quantized linears' inputs."""
from __future__ import annotations

import pytest
import torch

from faircalib.errors import ConfigError
from faircalib.models import tiny_model
from faircalib.quant.hadamard import OnlineRotation
from faircalib.quant.quantizer import fake_quant
from faircalib.quant.quarot import rotate_model


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


def _randomise(model, seed: int = 1, gain: float = 4.0):
    """Non-trivial norms, biases and larger weights so fusion and rotation errors would show in the logits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif p.ndim == 1:  # RMSNorm weights
                p.copy_(1.0 + 0.5 * torch.randn(p.shape, generator=g))
            else:
                p.mul_(gain)
    return model


def _ids(seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 95, (2, 19), generator=torch.Generator().manual_seed(seed))


CASES = [  # (arch, overrides, residual kind, down kind)
    ("llada", {}, "hadamard", "hadamard"),  # d_model 64 = 2^6, d_ff 96 = 12·8 (Paley I ⊗ Sylvester)
    ("dream", {}, "hadamard", "hadamard"),
    ("dream", {"d_ff": 184}, "hadamard", "block_hadamard(8 x 23)"),  # 184 = 8·23: no built-in Hadamard
    ("llada", {"d_ff": 90}, "hadamard", "random_orthogonal"),  # 90 = 2·45: no Hadamard can exist
    ("dream", {"d_model": 48, "d_ff": 120}, "hadamard", "hadamard"),  # 48 = 12·4, 120 = 60·2 (Paley II, q = 29)
    ("llada", {"tie_word_embeddings": True, "out_bias": True}, "hadamard", "hadamard"),  # tied head, o/down biases
]


@pytest.mark.parametrize("arch,overrides,res_kind,down_kind", CASES)
def test_rotation_preserves_logits(arch, overrides, res_kind, down_kind):
    model = _randomise(tiny_model(arch, seed=0, **overrides))
    ids = _ids()
    mask = torch.ones_like(ids)
    mask[1, :4] = 0  # left padding on the second row
    ref = model(ids, attention_mask=mask)
    emb_before = model.embed_tokens.weight.clone()
    info = rotate_model(model, seed=0)
    out = model(ids, attention_mask=mask)
    err = float((out - ref).abs().max())
    print(f"{arch} {overrides}: residual={info['residual']} down={info['down']} o={info['o']} "
          f"max|dlogit|={err:.2e} (max|logit|={float(ref.abs().max()):.2f})")
    assert info["residual"] == res_kind and info["down"] == down_kind and info["seed"] == 0
    assert info["untied"] == bool(overrides.get("tie_word_embeddings"))
    assert err < 1e-5 * max(1.0, float(ref.abs().max()))  # float32 models: ~2e-6 measured
    assert not torch.allclose(model.embed_tokens.weight, emb_before, atol=1e-3)  # really rotated
    for block in model.blocks:
        assert isinstance(block.act_transforms["down"], OnlineRotation)
        assert isinstance(block.act_transforms["o"], OnlineRotation)
        assert torch.all(block.role("attn_norm").weight == 1) and torch.all(block.role("mlp_norm").weight == 1)
    assert torch.all(model.final_norm.weight == 1)


def test_rotation_options_and_refusals():
    model = _randomise(tiny_model("dream", seed=2))
    ref = model(_ids(1))
    info = rotate_model(model, seed=7, online_o=False)
    assert info["o"] is None and "o" not in model.blocks[0].act_transforms
    assert float((model(_ids(1)) - ref).abs().max()) < 1e-4
    with pytest.raises(ConfigError, match="act_transforms"):
        rotate_model(model)  # twice
    tied = tiny_model("llada", seed=0, tie_word_embeddings=True)
    with pytest.raises(ConfigError, match="tied"):
        rotate_model(tied, untie=False)
    a, b = _randomise(tiny_model("llada", seed=3)), _randomise(tiny_model("llada", seed=3))
    rotate_model(a, seed=1), rotate_model(b, seed=1)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_rotation_in_bfloat16():
    model = _randomise(tiny_model("llada", seed=4)).to(torch.bfloat16)
    ref = model(_ids(2))
    rotate_model(model, seed=0)
    assert model.dtype == torch.bfloat16
    assert all(b.dtype == torch.float32 for b in model.blocks[0].act_transforms["down"].buffers())
    rel = float((model(_ids(2)) - ref).abs().max() / ref.abs().max())
    assert rel < 0.05  # bf16 weight rounding after the float64 fold


def _capture_inputs(model, roles=("q", "down")):
    """Forward pre-hooks on the linears themselves: they see the input after any online transform."""
    seen: dict[str, list[torch.Tensor]] = {r: [] for r in roles}
    handles = [b.role(r).register_forward_pre_hook(lambda m, a, r=r: seen[r].append(a[0].detach()))
               for b in model.blocks for r in roles]
    model(torch.randint(0, 95, (4, 32), generator=torch.Generator().manual_seed(9)))
    for h in handles:
        h.remove()
    return {r: torch.cat([x.reshape(-1, x.shape[-1]) for x in xs]) for r, xs in seen.items()}


def _stats(x: torch.Tensor) -> dict[str, float]:
    """Per-token max|x|/rms(x), kurtosis, and the 4-bit per-token quantization error ||Q(x)-x||/||x||."""
    rms = x.pow(2).mean(-1).sqrt()
    kurt = (x.pow(4).mean(-1) / x.pow(2).mean(-1).pow(2))
    qerr = (fake_quant(x, 4, ste=False) - x).norm(dim=-1) / x.norm(dim=-1)
    return {"max_over_rms": float((x.abs().amax(-1) / rms).mean()), "kurtosis": float(kurt.mean()),
            "a4_rel_err": float(qerr.mean())}


def test_rotation_spreads_activation_outliers():
    model = _randomise(tiny_model("dream", seed=5), gain=2.0)
    with torch.no_grad():  # massive channels, as in real LLMs: a residual channel and a d_ff channel
        model.embed_tokens.weight[:, 3] *= 40.0
        for block in model.blocks:
            block.role("up").weight[11] *= 40.0
    before = {r: _stats(x) for r, x in _capture_inputs(model).items()}
    rotate_model(model, seed=0)
    after = {r: _stats(x) for r, x in _capture_inputs(model).items()}
    for r, b in before.items():
        a = after[r]
        print(f"{r}_proj input  before: {b}  after: {a}")
        assert a["max_over_rms"] < 0.6 * b["max_over_rms"]
        assert a["kurtosis"] < 0.3 * b["kurtosis"]
        assert a["a4_rel_err"] < 0.6 * b["a4_rel_err"]
