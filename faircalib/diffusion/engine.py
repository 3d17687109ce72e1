"""`generate`: batched masked-diffusion decoding with the LLaDA / Dream commit policies (docs/method.md §1).

The state is [left-padded prompt | answer window of L tokens], the window all [MASK] at step 0. Each
step runs the model once (head on the window only), lets the policy choose a set of still-masked
positions and writes a token into each; nothing is ever re-masked, and after `steps` steps nothing
is masked. What a step commits is recorded as `commit_step`, from which every state is reconstructed.

Policies never write [MASK]: its logit is set to -inf before token choice (trained dLLMs give it ~0
probability anyway; the official code would otherwise leave such a position "masked" and break its
own schedule). `on_step` callbacks see the raw model logits.

Randomness: two generators seeded from `seed` — one for commit sets (random / origin / alg_temp), one
for tokens (Gumbel noise / sampling) — so `random` commit sets do not depend on the model or on the
temperature. temperature = 0 with a greedy policy draws nothing and is bit-for-bit reproducible.

Module boundary: the step loop; policy math in policies.py, counts in schedule.py.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F

from faircalib.bf16 import fast_bf16
from faircalib.diffusion.config import DREAM_CONFIDENCE_POLICIES, DecodeConfig, RecordSpec, resolve_config
from faircalib.diffusion.policies import (
    NEG_INF,
    add_gumbel_noise,
    bernoulli_commit,
    dream_sample_tokens,
    llada_proposals,
    random_commit,
    sampled_commit,
    topk_commit,
)
from faircalib.diffusion.prompts import batch_prompts, model_device, model_pad_id
from faircalib.diffusion.schedule import (
    dream_timesteps,
    dream_transfer_count,
    dream_transfer_prob,
    llada_transfer_counts,
)
from faircalib.diffusion.trajectory import DecodeStep, Trajectory
from faircalib.errors import ConfigError

StepCallback = Callable[[DecodeStep], None]
_TOKEN_STREAM = 0x9E3779B97F4A7C15  # derives the token generator's seed from `seed`


def make_generators(seed: int, device: torch.device) -> tuple[torch.Generator, torch.Generator]:
    """(commit-set generator, token generator), both seeded from `seed`."""
    commit = torch.Generator(device=device).manual_seed(seed % (1 << 64))
    token = torch.Generator(device=device).manual_seed((seed * 2 + 1) * _TOKEN_STREAM % (1 << 64))
    return commit, token


def window_logits(model: Any, ids: torch.Tensor, attention_mask: torch.Tensor | None, start: int) -> torch.Tensor:
    """Position-aligned logits for positions start..T-1 of ids (B, T) -> (B, T-start, V) float32. A bf16 model
    on a CPU without bf16 units runs its GEMMs through faircalib.bf16.fast_bf16 (float32 speed)."""
    with fast_bf16(model):
        return model(ids, attention_mask=attention_mask, window=(start, ids.shape[1])).float()


def policy_logits(logits: torch.Tensor, mask_token_id: int, inplace: bool = False) -> torch.Tensor:
    """The logits policies decode from: [MASK] excluded. (B, L, V) -> (B, L, V). inplace=True edits
    `logits` itself instead of copying it (for a caller that owns the tensor and needs no raw view)."""
    if 0 <= mask_token_id < logits.shape[-1]:
        if not inplace:
            logits = logits.clone()
        logits[..., mask_token_id] = NEG_INF
    return logits


class _Recorder:
    """Preallocated (S, B, L[, V]) CPU arrays for the requested per-step quantities."""

    def __init__(self, spec: RecordSpec, steps: int, batch: int, gen_length: int, vocab: int):
        need = spec.nbytes(steps, batch, gen_length, vocab)
        if need > spec.max_bytes:
            raise ConfigError(f"record needs {need / 2**20:.1f} MiB (> max_bytes={spec.max_bytes}); record fewer "
                              f"fields (probs costs 2*V bytes per position and step) or raise record.max_bytes")
        shape = (steps, batch, gen_length)
        self.arrays: dict[str, torch.Tensor] = {}
        for name in spec.names:
            if name == "top1":
                self.arrays[name] = torch.empty(shape, dtype=torch.int32)
            elif name == "probs":
                self.arrays[name] = torch.empty(shape + (vocab,), dtype=torch.float16)
            else:
                self.arrays[name] = torch.empty(shape, dtype=torch.float16)

    @torch.no_grad()
    def add(self, step: int, plogits: torch.Tensor) -> None:
        probs = F.softmax(plogits, dim=-1)  # (B, L, V)
        a = self.arrays
        if "top1" in a or "top1_prob" in a:
            top_p, top_i = probs.max(dim=-1)  # (B, L)
            if "top1" in a:
                a["top1"][step] = top_i.to(torch.int32).cpu()
            if "top1_prob" in a:
                a["top1_prob"][step] = top_p.half().cpu()
        if "neg_entropy" in a:
            a["neg_entropy"][step] = torch.special.xlogy(probs, probs).sum(-1).half().cpu()
        if "margin" in a:
            top2 = probs.topk(2, dim=-1).values  # (B, L, 2)
            a["margin"][step] = (top2[..., 0] - top2[..., 1]).half().cpu()
        if "probs" in a:
            a["probs"][step] = probs.half().cpu()


def _coerce_config(policy: str | None, config: DecodeConfig | None, kwargs: dict[str, Any]) -> DecodeConfig:
    cfg = config or DecodeConfig()
    if policy is not None:
        kwargs = {**kwargs, "policy": policy}
    if kwargs:
        try:
            cfg = replace(cfg, **kwargs)
        except TypeError as err:
            raise ConfigError(f"generate() got an unknown decode option: {err}") from err
    return cfg


@torch.no_grad()
def generate(model: Any, prompts: Any, policy: str | None = None, *, config: DecodeConfig | None = None,
             attention_mask: torch.Tensor | None = None, record: Any = None,
             on_step: StepCallback | None = None, **options: Any) -> Trajectory:
    """Decode an answer window of `gen_length` tokens after each prompt.

    prompts: list of 1-D LongTensors (any lengths) or a left-padded (B, P) tensor + `attention_mask`.
    policy / options: DecodeConfig fields (steps, gen_length, block_length, temperature, alg_temp, top_k,
    top_p, seed, eps, schedule), applied over `config`. policy=None uses `model.default_policy`.
    record: None | True | RecordSpec | names -> per-step arrays in `trajectory.records`.
    on_step: called once per step with a DecodeStep (state before the commit, window logits, masks).
    """
    cfg = resolve_config(model, _coerce_config(policy, config, options))
    spec = RecordSpec.coerce(record)
    device = model_device(model)
    mask_id = int(model.mask_token_id)
    prompt_ids, prompt_mask = batch_prompts(prompts, model_pad_id(model), mask_id, attention_mask, device)
    B, P = prompt_ids.shape
    L, S = cfg.gen_length, cfg.steps

    full_mask = torch.cat([prompt_mask, torch.ones(B, L, dtype=prompt_mask.dtype, device=device)], dim=1)  # (B, T)
    attn = None if bool(full_mask.all()) else full_mask
    window = torch.full((B, L), mask_id, dtype=torch.long, device=device)  # (B, L)
    masked = torch.ones(B, L, dtype=torch.bool, device=device)
    commit_step = torch.full((B, L), -1, dtype=torch.int16, device=device)
    gen_commit, gen_token = make_generators(cfg.seed, device)
    timesteps = dream_timesteps(S, cfg.eps, device) if cfg.schedule == "dream" else None
    block, spb = cfg.block_length, cfg.steps_per_block
    positions = torch.arange(L, device=device).view(1, L)
    recorder: _Recorder | None = None
    counts = None

    for s in range(S):
        # -- which positions may commit, and how many (per row) --------------------------------------
        if cfg.schedule == "llada":
            b, i = divmod(s, spb)
            in_block = (positions >= b * block) & (positions < (b + 1) * block)  # (1, L)
            if i == 0:  # LLaDA computes the block's counts once, at the block's first step
                counts = llada_transfer_counts((masked & in_block).sum(1), spb)  # (B, spb)
            eligible, k = masked & in_block, counts[:, i]
        else:
            eligible, k = masked, dream_transfer_count(masked.sum(1), s, S, timesteps)

        # -- model call ------------------------------------------------------------------------------
        ids = torch.cat([prompt_ids, window], dim=1)  # (B, T) state before this step
        logits = window_logits(model, ids, attn, P)  # (B, L, V)
        # a native model's logits are a fresh tensor (`fresh_logits`): without an on_step consumer of the raw
        # logits, mask the [MASK] column in place (one (B, L, V) float32 copy less: 2 GB at B*L = 4096, V = 126k)
        inplace = on_step is None and bool(getattr(model, "fresh_logits", False))
        plogits = policy_logits(logits, mask_id, inplace=inplace)
        if spec is not None:
            if recorder is None:
                recorder = _Recorder(spec, S, B, L, logits.shape[-1])
            recorder.add(s, plogits)

        # -- policy ------------------------------------------------------------------------------------
        commit, x0 = _policy_step(cfg, plogits, eligible, k, s, timesteps, gen_commit, gen_token)
        commit = commit & masked  # monotone by construction; never touch written positions
        new_window = torch.where(commit, x0, window)
        commit_step = commit_step.masked_fill(commit, s)
        if on_step is not None:
            on_step(DecodeStep(step=s, steps=S, ids=ids, attention_mask=full_mask, window_start=P, logits=logits,
                               masked=masked, committed=commit, candidates=x0, tokens=new_window,
                               policy_logits=plogits))
        window, masked = new_window, masked & ~commit

    if bool(masked.any()):  # cannot happen with the schedules above; guard the invariant anyway
        raise RuntimeError(f"decoding left {int(masked.sum())} positions masked after {S} steps ({cfg.policy})")
    return Trajectory(prompt_ids, prompt_mask, window, commit_step, cfg, mask_id, model_pad_id(model),
                      recorder.arrays if recorder is not None else {})


def _policy_step(cfg: DecodeConfig, plogits: torch.Tensor, eligible: torch.Tensor, k: torch.Tensor, step: int,
                 timesteps: torch.Tensor | None, gen_commit: torch.Generator,
                 gen_token: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of the configured policy -> (commit (B, L) bool, proposed tokens x0 (B, L) int64)."""
    policy, temp = cfg.policy, cfg.temperature
    filters = {"top_k": cfg.top_k, "top_p": cfg.top_p}  # Dream policies only (DecodeConfig validates)
    if policy == "low_confidence":
        x0, p_x0 = llada_proposals(plogits, temp, gen_token)
        return topk_commit(p_x0.masked_fill(~eligible, NEG_INF), k), x0
    if policy == "random":
        if cfg.schedule == "llada":  # llada_proposals' x0 without its (unused) softmax confidence
            x0 = add_gumbel_noise(plogits, temp, gen_token).argmax(dim=-1)
        else:
            x0 = dream_sample_tokens(plogits, temp, gen_token, **filters)[1]
        return random_commit(eligible, k, gen_commit), x0
    if policy == "origin":
        assert timesteps is not None
        x0 = dream_sample_tokens(plogits, temp, gen_token, **filters)[1]
        return bernoulli_commit(eligible, dream_transfer_prob(step, cfg.steps, timesteps), gen_commit), x0
    if policy in DREAM_CONFIDENCE_POLICIES:
        conf, x0 = dream_sample_tokens(plogits, temp, gen_token, confidence=policy, **filters)
        if cfg.alg_temp > 0:
            return sampled_commit(conf, eligible, k, cfg.alg_temp, gen_commit), x0
        return topk_commit(conf.masked_fill(~eligible, NEG_INF), k), x0
    raise ConfigError(f"decode policy={policy!r} is unknown")  # unreachable: validated in DecodeConfig
