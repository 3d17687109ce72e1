"""Stage I driver: run the FP teacher with the `random` commit policy over probe prompts and feed every
step into `PriorAccumulator`s (docs/method.md §4), giving a `PositionPrior` per prior setting.

    cfg = ProbeConfig(n_samples=512, steps=256, window=256)
    prior = probe_prior(model, tokenizer, None, cfg)            # prompts drawn from cfg.prompts
    weights = prior.aligned(seq_len=1024, floor=0.1)             # Stage II position weights (S,)

Sharding (the job service's probe actors): prompts are processed in *global* batches of
`cfg.batch_size` (batch k = prompts k*bs .. (k+1)*bs-1), each decoded with a commit-set seed derived from
(cfg.seed, k), and every per-sample vector is keyed by its global prompt index. A shard that starts at a
multiple of batch_size therefore computes exactly the rows the single pass computes, and
`PositionPrior.merge(shards)` equals the single-pass prior bit for bit:

    parts = [probe_shard(model, tok, cfg, start, min(start + 64, cfg.n_samples))
             for start in range(0, cfg.n_samples, 64)]            # 64 = a multiple of cfg.batch_size
    prior = PositionPrior.merge(parts)

`probe_priors` feeds several PriorSettings from the same rollouts (the ablation rows share commit sets
and teacher tokens, only the accumulation differs).

Boundary: rollouts + accumulation; the prior math lives in prior.py, decoding in faircalib.diffusion.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from faircalib.configs import Config, check_int, check_str
from faircalib.errors import ConfigError, DataError, NonFiniteError
from faircalib.finite import check_tensors, describe_non_finite
from faircalib.models.hashing import state_dict_hash
from faircalib.probe.prior import PositionPrior, PriorAccumulator, PriorSettings, prior_cache_key, sharpness

ProgressFn = Callable[[dict[str, Any]], None]
PROBE_POLICY = "random"
PAPER_SCALE: dict[str, Any] = {"n_samples": 512, "steps": 256, "window": 256, "block_length": None}


@dataclass(frozen=True)
class ProbeConfig(Config):
    """Stage I settings. Defaults: docs/method.md §4 / the paper (512 prompts, T = 256 steps, window L = 256,
    teacher argmax). `schedule` is the commit-count family of the random policy ("llada" even split per
    block, "dream" linspace); None = the model's own default policy's family, so probing visits the
    states inference visits. `block_length` None = one block (= window). `batch_size` fixes how commit
    sets are drawn (part of the prior's identity; shards start on multiples of it)."""

    prompts: str = "builtin:tasks:probe"
    n_samples: int = 512
    steps: int = 256
    window: int = 256
    block_length: int | None = None
    temperature: float = 0.0
    prior: PriorSettings = field(default_factory=PriorSettings)
    seed: int = 0
    batch_size: int = 16
    schedule: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.prior, Mapping):
            object.__setattr__(self, "prior", PriorSettings.from_dict(self.prior, "prior"))
        check_str("prompts", self.prompts, "a prompt source (builtin:tasks[:SPLIT], PATH.txt|.jsonl, hf:REPO...)")
        check_int("n_samples", self.n_samples, 1)
        check_int("batch_size", self.batch_size, 1)
        check_int("seed", self.seed, 0)
        if not isinstance(self.prior, PriorSettings):
            raise ConfigError(f"prior: expected prior settings (a mapping), got {self.prior!r}", field="prior")
        try:  # steps / window / block_length / temperature / schedule, checked together by DecodeConfig
            self.decode_config()
        except ConfigError as e:
            name = _DECODE_TO_PROBE.get(e.field or "", e.field)
            text = str(e)
            for ours, theirs in _DECODE_TO_PROBE.items():
                text = text.replace(ours, theirs)
            raise ConfigError(text, field=name) from None

    def decode_config(self):
        from faircalib.diffusion import DecodeConfig

        return DecodeConfig(policy=PROBE_POLICY, steps=self.steps, gen_length=self.window,
                            block_length=self.block_length, temperature=self.temperature, seed=self.seed,
                            schedule=self.schedule)

    @classmethod
    def for_decoding(cls, decoding: Mapping[str, Any], **overrides: Any) -> ProbeConfig:
        """Probe the states the model's own decoding visits: T = decoding steps, L = gen_length, the
        same semi-AR block (None when it is the whole window); `overrides` (any field) win.
        `decoding` is e.g. `faircalib.models.model_decoding(source).values` (a model card's settings)."""
        steps, window = int(decoding.get("steps", cls.steps)), int(decoding.get("gen_length", cls.window))
        block = decoding.get("block_length")
        d: dict[str, Any] = {"steps": steps, "window": window,
                             "block_length": None if block in (None, window) else int(block)}
        d.update(overrides)
        return cls(**d)

    @classmethod
    def paper_scale(cls, **overrides: Any) -> ProbeConfig:
        """The paper's Stage I scale (docs/method.md §4): 512 prompts, T = L = 256, one block."""
        return cls(**{**PAPER_SCALE, **overrides})


_DECODE_TO_PROBE = {"gen_length": "window"}  # DecodeConfig's name for a probe field


def probe_defaults(source: str | None = None, path: Any = None, *, arch: str | None = None,
                   paper_scale: bool = False, **overrides: Any) -> tuple[ProbeConfig, str]:
    """Stage I settings for a model, and where T / L came from: `overrides` (ProbeConfig fields) win;
    then `paper_scale` (PAPER_SCALE); else the model's own decoding, T = its steps and L = its gen_length
    (faircalib.models.model_decoding of SOURCE: the model card, else the family's documented defaults;
    a model with no source: the `arch` family's defaults)."""
    from faircalib.errors import ModelLoadError
    from faircalib.models.defaults import FAMILY_DECODING, FAMILY_SOURCES, model_decoding

    if paper_scale:
        cfg, origin = ProbeConfig.from_dict({**PAPER_SCALE, **overrides}, "probe"), "paper scale"
    else:
        dec = None
        if source is not None:
            try:
                dec = model_decoding(source, path)
            except ModelLoadError:
                if arch is None:
                    raise
        if dec is not None:
            values, origin = dec.values, dec.origin
        elif arch is not None:
            values, origin = FAMILY_DECODING[arch], FAMILY_SOURCES[arch]
        else:
            raise ConfigError("probe_defaults needs a model source or its architecture", field="probe")
        cfg = ProbeConfig.for_decoding(values, **overrides)
    if {"steps", "window"} <= set(overrides):
        origin = "given steps / window"
    return cfg, origin


# ---------------------------------------------------------------------------------------------- hashes
def probe_data_hash(prompts: Sequence[str]) -> str:
    """sha256 over the ordered prompt texts (the probe data's identity in the prior's cache key)."""
    h = hashlib.sha256()
    for i, p in enumerate(prompts):
        b = p.encode("utf-8")
        h.update(f"{i}:{len(b)}:".encode())
        h.update(b)
    return h.hexdigest()


def probe_meta(cfg: ProbeConfig, default_policy: str, *, model_hash: str, data_hash: str) -> dict[str, Any]:
    """What a prior probed with `cfg` on a model (whose default decoding policy is `default_policy`)
    records besides its PriorSettings; `prior_cache_key(cfg.prior, meta)` is its identity."""
    from faircalib.diffusion import resolve_config

    dcfg = resolve_config(_PolicyOnly(default_policy), cfg.decode_config())
    return {"model_hash": model_hash, "data_hash": data_hash, "policy": PROBE_POLICY, "schedule": dcfg.schedule,
            "steps": cfg.steps, "window": cfg.window, "block_length": dcfg.block_length, "seed": cfg.seed,
            "temperature": float(cfg.temperature), "batch_size": cfg.batch_size, "prompt_source": cfg.prompts,
            "eps": dcfg.eps}


@dataclass(frozen=True)
class _PolicyOnly:
    default_policy: str


def probe_cache_key(cfg: ProbeConfig, default_policy: str, model_hash: str) -> str:
    """The cache key of the prior `probe_prior(model, tok, None, cfg)` will produce, computed without
    probing (the job service looks its prior cache up with it): `PositionPrior.cache_key()` of that prior.
    model_hash: `faircalib.models.weights_hash(source)` of the model the prior is probed on."""
    from faircalib.data import sample_prompts

    data_hash = probe_data_hash(sample_prompts(cfg.prompts, cfg.n_samples, cfg.seed))
    return prior_cache_key(cfg.prior, probe_meta(cfg, default_policy, model_hash=model_hash, data_hash=data_hash))


def batch_seed(seed: int, batch_index: int) -> int:
    """Commit-set seed of global probe batch `batch_index` (independent streams per batch)."""
    return int(hashlib.sha256(f"faircalib-probe:{seed}:{batch_index}".encode()).hexdigest()[:15], 16)


# ---------------------------------------------------------------------------------------------- driver
def _tokenize(tokenizer, prompts: Sequence[str]) -> list[torch.Tensor]:
    out = []
    for i, p in enumerate(prompts):
        ids = tokenizer(p, add_special_tokens=False)["input_ids"]
        if not ids:
            raise DataError(f"probe prompt #{i} tokenizes to nothing; drop empty prompts from the source")
        out.append(torch.tensor(ids, dtype=torch.long))
    return out


def probe_priors(model, tokenizer, prompts: Sequence[str] | None, cfg: ProbeConfig,
                 variants: Mapping[str, PriorSettings] | None = None, *, sample_offset: int = 0,
                 data_hash: str | None = None, model_hash: str | None = None,
                 progress: ProgressFn | None = None, device: str | None = "auto") -> dict[str, PositionPrior]:
    """Probe once, accumulate every setting in `variants` (default {"prior": cfg.prior}).

    prompts: the probe prompt texts of this call (None: the first cfg.n_samples of cfg.prompts, drawn with
      cfg.seed). Their global indices are sample_offset .. sample_offset + len - 1; sample_offset must be a
      multiple of cfg.batch_size (exact sharding, see the module docstring).
    data_hash: the hash of the *whole* probe set (`probe_data_hash(all prompts)`) when this call is a shard;
      default: the hash of `prompts`. model_hash: default `state_dict_hash(model)`.
    progress(event): {"event": "probe_batch", "done": rows done, "total": rows in this call, "batch": k}.
    device: where the rollouts run (faircalib.devices: auto = CUDA when available); the model is moved
      there for the call and back afterwards.
    """
    from faircalib.devices import on_device

    with on_device(model, device):
        return _probe_priors(model, tokenizer, prompts, cfg, variants, sample_offset=sample_offset,
                             data_hash=data_hash, model_hash=model_hash, progress=progress)


def _probe_priors(model, tokenizer, prompts: Sequence[str] | None, cfg: ProbeConfig,
                  variants: Mapping[str, PriorSettings] | None, *, sample_offset: int, data_hash: str | None,
                  model_hash: str | None, progress: ProgressFn | None) -> dict[str, PositionPrior]:
    from faircalib.diffusion import generate, policy_logits, resolve_config
    from faircalib.diffusion.config import model_default_policy
    from faircalib.models.loader import require_dllm

    require_dllm(model, "faircalib.probe (Stage I)")
    variants = dict(variants) if variants is not None else {"prior": cfg.prior}
    if not variants:
        raise ConfigError("probe_priors needs at least one PriorSettings variant")
    if prompts is None:
        if sample_offset:
            raise ConfigError("sample_offset needs explicit prompts (use probe_shard to shard a prompt source)")
        from faircalib.data import sample_prompts

        prompts = sample_prompts(cfg.prompts, cfg.n_samples, cfg.seed)
    prompts = list(prompts)
    if not prompts:
        raise ConfigError("probe needs at least one prompt")
    if sample_offset < 0 or sample_offset % cfg.batch_size:
        raise ConfigError(f"probe sample_offset={sample_offset} must be a non-negative multiple of batch_size="
                          f"{cfg.batch_size} (shards must start on a global batch boundary to merge exactly)")
    dcfg = resolve_config(model, cfg.decode_config())
    meta = probe_meta(cfg, model_default_policy(model), model_hash=model_hash or state_dict_hash(model),
                      data_hash=data_hash or probe_data_hash(prompts))
    mask_id = int(model.mask_token_id)
    kinds = sorted({s.reliability for s in variants.values() if s.beta > 0})
    ids = _tokenize(tokenizer, prompts)
    L, T, bs = cfg.window, cfg.steps, cfg.batch_size
    rows: dict[str, list[torch.Tensor]] = {name: [] for name in variants}
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        for start in range(0, len(ids), bs):
            chunk = ids[start:start + bs]
            k = (sample_offset + start) // bs
            accs = {name: PriorAccumulator(len(chunk), L, T, s) for name, s in variants.items()}

            def on_step(st, k=k, accs=accs) -> None:
                bad = describe_non_finite(st.logits)
                if bad:  # a NaN/inf model still "commits" tokens: its prior would look finite, so stop here
                    raise NonFiniteError(f"probe: the model's logits at diffusion step {st.step} of probe batch {k} "
                                         f"have {bad}; the model is broken (NaN/inf weights or activations), no "
                                         "prior is built from it")
                scores = {}
                if kinds:
                    plog = st.policy_logits if st.policy_logits is not None else policy_logits(st.logits, mask_id)
                    # (B, L, V) [MASK] excluded, as the policies saw it (generate's copy: no second one)
                    scores = {kind: sharpness(plog, kind) for kind in kinds}  # (B, L)
                for name, acc in accs.items():
                    s = variants[name]
                    acc.update(st.step, st.masked, st.committed, scores.get(s.reliability) if s.beta > 0 else None)

            generate(model, chunk, config=dcfg, seed=batch_seed(cfg.seed, k), on_step=on_step)
            for name, acc in accs.items():
                rows[name].append(acc.finalize())  # (b, L)
            if progress is not None:
                progress({"event": "probe_batch", "batch": k, "done": start + len(chunk), "total": len(ids)})
    finally:
        if was_training:
            model.train()
    sample_ids = torch.arange(sample_offset, sample_offset + len(ids), dtype=torch.long)
    out = {name: PositionPrior(torch.cat(r), sample_ids.clone(), variants[name], dict(meta)) for name, r in rows.items()}
    for name, prior in out.items():
        check_tensors([(f"{name}.per_sample", prior.per_sample)], where="probe: the position prior",
                      fix="the rollouts produced non-finite scores; check the model and the prior settings")
    return out


def probe_prior(model, tokenizer, prompts: Sequence[str] | None, cfg: ProbeConfig, *, sample_offset: int = 0,
                data_hash: str | None = None, model_hash: str | None = None,
                progress: ProgressFn | None = None, device: str | None = "auto") -> PositionPrior:
    """Stage I with cfg.prior (see `probe_priors` for the arguments)."""
    return probe_priors(model, tokenizer, prompts, cfg, None, sample_offset=sample_offset, data_hash=data_hash,
                        model_hash=model_hash, progress=progress, device=device)["prior"]


def probe_shard(model, tokenizer, cfg: ProbeConfig, start: int, stop: int, *, model_hash: str | None = None,
                variants: Mapping[str, PriorSettings] | None = None, progress: ProgressFn | None = None,
                device: str | None = "auto") -> PositionPrior | dict[str, PositionPrior]:
    """One shard of the cfg.prompts probe set: prompts[start:stop] of the cfg.n_samples drawn with cfg.seed,
    keyed by global index and carrying the whole set's data hash, so `PositionPrior.merge` of the shards
    equals `probe_prior(model, tokenizer, None, cfg)`. `start` must be a multiple of cfg.batch_size.
    Returns one prior, or a dict when `variants` is given."""
    from faircalib.data import sample_prompts

    if not 0 <= start < stop <= cfg.n_samples:
        raise ConfigError(f"probe shard [{start}, {stop}) is outside 0..{cfg.n_samples}")
    every = sample_prompts(cfg.prompts, cfg.n_samples, cfg.seed)
    out = probe_priors(model, tokenizer, every[start:stop], cfg, variants, sample_offset=start,
                       data_hash=probe_data_hash(every), model_hash=model_hash, progress=progress, device=device)
    return out if variants is not None else out["prior"]
