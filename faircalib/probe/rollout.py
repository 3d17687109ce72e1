"""Stage I driver: run the FP teacher with the `random` commit policy over probe prompts and feed every
step into `PriorAccumulator`s (SPEC.md §4), giving a `PositionPrior` per prior setting.

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
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch

from faircalib.errors import ConfigError, DataError
from faircalib.probe.prior import PositionPrior, PriorAccumulator, PriorSettings, sharpness

ProgressFn = Callable[[dict[str, Any]], None]
PROBE_POLICY = "random"


@dataclass(frozen=True)
class ProbeConfig:
    """Stage I settings. Defaults: SPEC.md §4 / the paper (512 prompts, T = 256 steps, window L = 256,
    teacher argmax). `schedule` is the commit-count family of the random policy ("llada" even split per
    block, "dream" linspace); None = the model's own default policy's family, so probing visits the
    states inference visits. `block_length` None = one block (= window)."""

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
            object.__setattr__(self, "prior", PriorSettings(**self.prior))
        for name in ("n_samples", "batch_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"probe {name}={v!r} must be a positive integer")
        if not isinstance(self.prompts, str) or not self.prompts:
            raise ConfigError(f"probe prompts={self.prompts!r} must be a prompt source (builtin:tasks:probe, "
                              f"a .txt/.jsonl path, hf:...)")
        # validates steps / window / block_length / temperature / schedule together, naming the field
        self.decode_config()

    def decode_config(self):
        from faircalib.diffusion import DecodeConfig

        return DecodeConfig(policy=PROBE_POLICY, steps=self.steps, gen_length=self.window,
                            block_length=self.block_length, temperature=self.temperature, seed=self.seed,
                            schedule=self.schedule)

    def replace(self, **kw: Any) -> ProbeConfig:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d.update(kw)
        return ProbeConfig(**d)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["prior"] = asdict(self.prior)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ProbeConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"probe config has unknown field(s) {unknown}; allowed: {', '.join(sorted(names))}")
        return cls(**d)


# ---------------------------------------------------------------------------------------------- hashes
def probe_data_hash(prompts: Sequence[str]) -> str:
    """sha256 over the ordered prompt texts (the probe data's identity in the prior's cache key)."""
    h = hashlib.sha256()
    for i, p in enumerate(prompts):
        b = p.encode("utf-8")
        h.update(f"{i}:{len(b)}:".encode())
        h.update(b)
    return h.hexdigest()


@torch.no_grad()
def state_dict_hash(model: torch.nn.Module) -> str:
    """Exact sha256 over an in-memory model's config and state-dict bytes (name order). For a model
    loaded from disk, `faircalib.models.weights_hash(source)` is the cheaper equivalent."""
    h = hashlib.sha256()
    cfg = getattr(model, "config", None)
    to_official = getattr(cfg, "to_official", None)
    h.update(json.dumps(to_official() if callable(to_official) else repr(cfg), sort_keys=True, default=str).encode())
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


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
                 progress: ProgressFn | None = None) -> dict[str, PositionPrior]:
    """Probe once, accumulate every setting in `variants` (default {"prior": cfg.prior}).

    prompts: the probe prompt texts of this call (None: the first cfg.n_samples of cfg.prompts, drawn with
      cfg.seed). Their global indices are sample_offset .. sample_offset + len - 1; sample_offset must be a
      multiple of cfg.batch_size (exact sharding, see the module docstring).
    data_hash: the hash of the *whole* probe set (`probe_data_hash(all prompts)`) when this call is a shard;
      default: the hash of `prompts`. model_hash: default `state_dict_hash(model)`.
    progress(event): {"event": "probe_batch", "done": rows done, "total": rows in this call, "batch": k}.
    """
    from faircalib.diffusion import generate, policy_logits, resolve_config

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

            def on_step(st, accs=accs) -> None:
                scores = {}
                if kinds:
                    plog = policy_logits(st.logits, mask_id)  # (B, L, V) [MASK] excluded, as the policies
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
    meta = {
        "model_hash": model_hash or state_dict_hash(model),
        "data_hash": data_hash or probe_data_hash(prompts),
        "policy": PROBE_POLICY, "schedule": dcfg.schedule, "steps": T, "window": L,
        "block_length": dcfg.block_length, "seed": cfg.seed, "temperature": float(cfg.temperature),
        "batch_size": bs, "prompt_source": cfg.prompts, "eps": dcfg.eps,
    }
    return {name: PositionPrior(torch.cat(r), sample_ids.clone(), variants[name], dict(meta))
            for name, r in rows.items()}


def probe_prior(model, tokenizer, prompts: Sequence[str] | None, cfg: ProbeConfig, *, sample_offset: int = 0,
                data_hash: str | None = None, model_hash: str | None = None,
                progress: ProgressFn | None = None) -> PositionPrior:
    """Stage I with cfg.prior (see `probe_priors` for the arguments)."""
    return probe_priors(model, tokenizer, prompts, cfg, None, sample_offset=sample_offset, data_hash=data_hash,
                        model_hash=model_hash, progress=progress)["prior"]


def probe_shard(model, tokenizer, cfg: ProbeConfig, start: int, stop: int, *, model_hash: str | None = None,
                variants: Mapping[str, PriorSettings] | None = None,
                progress: ProgressFn | None = None) -> PositionPrior | dict[str, PositionPrior]:
    """One shard of the cfg.prompts probe set: prompts[start:stop] of the cfg.n_samples drawn with cfg.seed,
    keyed by global index and carrying the whole set's data hash, so `PositionPrior.merge` of the shards
    equals `probe_prior(model, tokenizer, None, cfg)`. `start` must be a multiple of cfg.batch_size.
    Returns one prior, or a dict when `variants` is given."""
    from faircalib.data import sample_prompts

    if not 0 <= start < stop <= cfg.n_samples:
        raise ConfigError(f"probe shard [{start}, {stop}) is outside 0..{cfg.n_samples}")
    every = sample_prompts(cfg.prompts, cfg.n_samples, cfg.seed)
    out = probe_priors(model, tokenizer, every[start:stop], cfg, variants, sample_offset=start,
                       data_hash=probe_data_hash(every), model_hash=model_hash, progress=progress)
    return out if variants is not None else out["prior"]
