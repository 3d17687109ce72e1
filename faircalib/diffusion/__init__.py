"""Masked-diffusion decoding for LLaDA / Dream (docs/method.md §1): batched `generate` with every commit policy,
compact trajectories (states rebuilt from commit steps), optional per-step records, an `on_step` hook
for probing, and teacher-forced `replay` of another model on a trajectory's states.

    from faircalib.diffusion import generate, iter_replay, decode_text
    traj = generate(model, [ids1, ids2], steps=64, gen_length=64, block_length=32)   # model's default policy
    texts = decode_text(tokenizer, traj)
    for st in iter_replay(quant_model, traj): ...
"""
from faircalib.diffusion.config import (
                                        DREAM_CONFIDENCE_POLICIES,
                                        DREAM_POLICIES,
                                        LLADA_POLICIES,
                                        POLICIES,
                                        SCHEDULES,
                                        DecodeConfig,
                                        RecordSpec,
                                        resolve_config,
                                        schedule_of,
)
from faircalib.diffusion.engine import generate, make_generators, policy_logits, window_logits
from faircalib.diffusion.prompts import batch_prompts
from faircalib.diffusion.replay import ReplayStep, iter_replay, replay
from faircalib.diffusion.schedule import (
                                        dream_timesteps,
                                        dream_transfer_count,
                                        llada_transfer_counts,
                                        schedule_counts,
)
from faircalib.diffusion.text import decode_text
from faircalib.diffusion.trajectory import DecodeState, DecodeStep, Trajectory

__all__ = [
                                        "DREAM_CONFIDENCE_POLICIES",
                                        "DREAM_POLICIES",
                                        "LLADA_POLICIES",
                                        "POLICIES",
                                        "SCHEDULES",
                                        "DecodeConfig",
                                        "DecodeState",
                                        "DecodeStep",
                                        "RecordSpec",
                                        "ReplayStep",
                                        "Trajectory",
                                        "batch_prompts",
                                        "decode_text",
                                        "dream_timesteps",
                                        "dream_transfer_count",
                                        "generate",
                                        "iter_replay",
                                        "llada_transfer_counts",
                                        "make_generators",
                                        "policy_logits",
                                        "replay",
                                        "resolve_config",
                                        "schedule_counts",
                                        "schedule_of",
                                        "window_logits",
]
