"""The result of one decoding run and the per-step objects handed to callbacks.

A `Trajectory` stores no per-step states: commits are monotone, so the state before step s is the
prompt plus every window token with `commit_step < s`, [MASK] elsewhere (`Trajectory.state(s)`).
Optional per-step records (top-1 ids, probabilities, ...) are (S, B, L) CPU arrays in compact dtypes.

Module boundary: containers + state reconstruction + (de)serialisation (safetensors, no pickle).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch

from faircalib.diffusion.config import DecodeConfig
from faircalib.errors import CheckpointError, ConfigError


class DecodeState(NamedTuple):
    """A decoding state. ids: (B, P+L) int64; attention_mask: (B, P+L) int64 (0 = left padding);
    masked: (B, L) bool, True where the window position still holds [MASK]."""

    ids: torch.Tensor
    attention_mask: torch.Tensor
    masked: torch.Tensor


@dataclass
class DecodeStep:
    """What `generate(on_step=...)` receives at every step (tensors live on the model's device).

    ids / attention_mask: (B, P+L) the state *before* this step's commit; window_start = P.
    logits: (B, L, V) float32 raw, position-aligned window logits of the decoding model.
    masked: (B, L) bool, masked before the commit; committed: (B, L) bool, written this step.
    candidates: (B, L) int64 the policy's proposed token at every position (meaningful where masked).
    tokens: (B, L) int64 the window after this step's commit.
    policy_logits: (B, L, V) the view the policy decoded from ([MASK] column -inf), so callbacks need not
    copy the logits again (`policy_logits(logits, mask_id)` gives the same tensor); None from other callers.
    """

    step: int
    steps: int
    ids: torch.Tensor
    attention_mask: torch.Tensor
    window_start: int
    logits: torch.Tensor
    masked: torch.Tensor
    committed: torch.Tensor
    candidates: torch.Tensor
    tokens: torch.Tensor
    policy_logits: torch.Tensor | None = None

    @property
    def written(self) -> torch.Tensor:
        """(B, L) int64: the token written this step where committed, -1 elsewhere."""
        return torch.where(self.committed, self.tokens, torch.full_like(self.tokens, -1))


@dataclass
class Trajectory:
    """Final window tokens and commit steps of a batch decoded with one config.

    prompt_ids / prompt_mask: (B, P) left-padded prompts and their attention mask.
    tokens: (B, L) int64 final window tokens. commit_step: (B, L) int16, the step (0..S-1) at which each
    window position was written. records: name -> (S, B, L) (probs: (S, B, L, V)) CPU arrays.
    config: the resolved DecodeConfig (policy, schedule and block_length filled in; includes the seed).
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    tokens: torch.Tensor
    commit_step: torch.Tensor
    config: DecodeConfig
    mask_token_id: int
    pad_token_id: int
    records: dict[str, torch.Tensor] = field(default_factory=dict)

    # -- shape / metadata ---------------------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        return self.tokens.shape[0]

    @property
    def prompt_len(self) -> int:
        """P: the padded prompt length = start of the window."""
        return self.prompt_ids.shape[1]

    @property
    def gen_length(self) -> int:
        return self.tokens.shape[1]

    @property
    def steps(self) -> int:
        return self.config.steps

    @property
    def policy(self) -> str:
        return self.config.policy  # type: ignore[return-value]

    @property
    def seed(self) -> int:
        return self.config.seed

    @property
    def prompt_lengths(self) -> torch.Tensor:
        """(B,) int64 real (unpadded) prompt lengths."""
        return self.prompt_mask.long().sum(1)

    @property
    def device(self) -> torch.device:
        return self.tokens.device

    # -- states ------------------------------------------------------------------------------------
    def masked_before(self, step: int) -> torch.Tensor:
        """(B, L) bool: window positions still masked before `step` (step = S gives the final state)."""
        self._check_step(step, allow_end=True)
        return self.commit_step.long() >= step

    def committed_at(self, step: int) -> torch.Tensor:
        """(B, L) bool: positions written at `step`."""
        self._check_step(step)
        return self.commit_step.long() == step

    def state(self, step: int) -> DecodeState:
        """The state before `step` (0 = all masked; S = final), reconstructed from commit_step."""
        masked = self.masked_before(step)  # (B, L)
        window = self.tokens.masked_fill(masked, self.mask_token_id)  # (B, L)
        ids = torch.cat([self.prompt_ids, window], dim=1)  # (B, P+L)
        ones = torch.ones_like(self.tokens, dtype=self.prompt_mask.dtype)
        return DecodeState(ids, torch.cat([self.prompt_mask, ones], dim=1), masked)

    def sequences(self) -> torch.Tensor:
        """(B, P+L) final ids (prompt + answer window)."""
        return self.state(self.steps).ids

    def commits_per_step(self) -> torch.Tensor:
        """(S, B) int64: how many positions each step committed."""
        steps = torch.arange(self.steps, device=self.device).view(-1, 1, 1)
        return (self.commit_step.long().unsqueeze(0) == steps).sum(-1)

    def _check_step(self, step: int, allow_end: bool = False) -> None:
        hi = self.steps if allow_end else self.steps - 1
        if not 0 <= step <= hi:
            raise ConfigError(f"step={step} is outside 0..{hi} for a {self.steps}-step trajectory")

    # -- slicing / moving -----------------------------------------------------------------------------
    def select(self, rows: slice | list[int] | torch.Tensor) -> Trajectory:
        """A sub-batch (e.g. to replay a large batch in chunks). Records are sliced on dim 1."""
        if isinstance(rows, slice):
            idx = torch.arange(self.batch_size)[rows]
        else:
            idx = torch.as_tensor(rows, dtype=torch.long)
        dev = idx.to(self.device)
        recs = {k: v.index_select(1, idx.to(v.device)) for k, v in self.records.items()}
        return Trajectory(self.prompt_ids.index_select(0, dev), self.prompt_mask.index_select(0, dev),
                          self.tokens.index_select(0, dev), self.commit_step.index_select(0, dev), self.config,
                          self.mask_token_id, self.pad_token_id, recs)

    def to(self, device: torch.device | str) -> Trajectory:
        """Move the core tensors (records stay on the CPU)."""
        return Trajectory(self.prompt_ids.to(device), self.prompt_mask.to(device), self.tokens.to(device),
                          self.commit_step.to(device), self.config, self.mask_token_id, self.pad_token_id,
                          self.records)

    # -- persistence --------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """One safetensors file; the config and ids go to its string metadata."""
        from safetensors.torch import save_file

        tensors = {"prompt_ids": self.prompt_ids, "prompt_mask": self.prompt_mask, "tokens": self.tokens,
                   "commit_step": self.commit_step}
        tensors.update({f"record.{k}": v for k, v in self.records.items()})
        meta = {"format": "faircalib.trajectory/1", "config": json.dumps(self.config.to_dict()),
                "mask_token_id": str(self.mask_token_id), "pad_token_id": str(self.pad_token_id)}
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path), metadata=meta)

    @classmethod
    def load(cls, path: str | Path) -> Trajectory:
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
        except Exception as err:  # safetensors raises several types for a bad file
            raise CheckpointError(f"cannot read trajectory file {path}: {err}") from err
        if meta.get("format") != "faircalib.trajectory/1":
            raise CheckpointError(f"{path} is not a faircalib trajectory (format={meta.get('format')!r})")
        records = {k.removeprefix("record."): v for k, v in tensors.items() if k.startswith("record.")}
        return cls(tensors["prompt_ids"], tensors["prompt_mask"], tensors["tokens"], tensors["commit_step"],
                   DecodeConfig.from_dict(json.loads(meta["config"])), int(meta["mask_token_id"]),
                   int(meta["pad_token_id"]), records)
