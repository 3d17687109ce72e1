"""Eval test fixtures: a tiny random LLaDA sized to the byte tokenizer, a copy trained for a few seconds to
answer a handful of fixed prompts, and both saved as model directories."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from faircalib.models import save_model_dir, tiny_model

# (prompt, answer) pairs the trained fixture learns; answers are written as " ANSWER" after "A:"
FACTS = [("Q: 12+34=?\nA:", " 46"), ("Q: 20+21=?\nA:", " 41"), ("Q: heaven and?\nA:", " earth"),
         ("Q: In the?\nA:", " beginning")]




def _build(tok, seed=0, arch="llada"):
    return tiny_model(arch, seed, vocab_size=len(tok), mask_token_id=tok.mask_token_id, pad_token_id=tok.pad_token_id,
                      eos_token_id=tok.eos_token_id)


@pytest.fixture(scope="session")
def facts():
    return list(FACTS)


@pytest.fixture(scope="session")
def tiny_random(byte_tokenizer):
    return _build(byte_tokenizer, seed=0)


def _train(model, tok, steps=300, seed=0):
    """Masked-diffusion SFT on FACTS: answer tokens (and one EOS after them) masked at a random ratio,
    CE on masked positions; a few seconds on one thread."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for prompt, answer in FACTS:
        p = tok(prompt, add_special_tokens=False)["input_ids"]
        a = tok(answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        rows.append((p, a))
    T = max(len(p) + len(a) for p, a in rows)
    ids = torch.full((len(rows), T), tok.pad_token_id)
    attn = torch.zeros(len(rows), T, dtype=torch.long)
    ans = torch.zeros(len(rows), T, dtype=torch.bool)
    for i, (p, a) in enumerate(rows):
        ids[i, T - len(p) - len(a):] = torch.tensor(p + a)
        attn[i, T - len(p) - len(a):] = 1
        ans[i, T - len(a):] = True
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    model.train()
    for _ in range(steps):
        x, m = ids.repeat(4, 1), ans.repeat(4, 1)
        ratio = torch.rand(x.shape[0], 1, generator=g).clamp(min=0.1)
        masked = (torch.rand(x.shape, generator=g) < ratio) & m
        masked[~masked.any(1), -1] = True
        logits = model(x.masked_fill(masked, model.mask_token_id), attention_mask=attn.repeat(4, 1))
        loss = F.cross_entropy(logits[masked], x[masked])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval().requires_grad_(False)


@pytest.fixture(scope="session")
def tiny_trained(byte_tokenizer):
    torch.set_num_threads(1)
    return _train(_build(byte_tokenizer, seed=1), byte_tokenizer)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory, tiny_trained, byte_tokenizer):
    """The trained tiny model as a model directory (config, safetensors, tokenizer)."""
    return save_model_dir(tiny_trained, tmp_path_factory.mktemp("tiny_llada"), tokenizer=byte_tokenizer)
