"""`CalibConfig`: the Stage II settings (docs/method.md §3, §6): which calibration sequences, the prior's
weight outside the answer window, and how each block is trained (FlatQuant's optimiser defaults).
"""
from __future__ import annotations

from dataclasses import dataclass

from faircalib.configs import Config, check_bool, check_choice, check_float, check_int, check_str
from faircalib.probe.prior import DEFAULT_FLOOR

NAN_POLICIES = ("error", "rtn")
LAYOUTS = ("stream", "answer")  # random windows of the tokenized source | sequences ending on an answer window
MASKINGS = ("none", "window")  # fully observed (the paper) | [MASK] at t ~ U(0, 1) in the answer window (ours)
DEFAULT_CALIB_DATA = "builtin:mix:train"  # the offline stand-in for WikiText-2; disjoint from held-out splits


@dataclass(frozen=True)
class CalibConfig(Config):
    """Stage II settings.

    Data (used by `faircalib.pipeline.calibration_ids`; `quantize` takes the ids themselves):
      data: the text source; n sequences of seq_len tokens, drawn with data_seed (the paper: 128 x 1024
      tokens of WikiText-2). floor: the position weight outside the prior's answer window
      (`PositionPrior.aligned(seq_len, floor)`).
      layout "stream" (default, the paper): windows drawn uniformly from the tokenized source; "answer":
      each sequence ends on one task example's answer window (task sources only,
      `faircalib.data.sample_task_sequences`), so the prior's last-L placement lands on answer positions.
      masking "none" (default, the paper: fully observed); "window": the states a dLLM decodes from --
      the last `window` positions masked at a ratio t ~ U(0, 1) per sequence (`faircalib.calibrate.masked`;
      docs/method.md §3, an extension beyond the paper). window: the answer-window length for both
      (None = the probe window L).
    Training: AdamW with lr for transforms/scales and lr * clip_lr_mult for clipping factors, cosine
      schedule per block down to lr * min_lr_ratio over epochs * ceil(n / batch_size) steps.
      loss_normalize divides the loss by its detached value (unit-scale gradients).
    Engine: nan_policy "error" stops with CalibrationError naming the block, "rtn" falls back to RTN
      for that block and records it; streaming=False keeps every block's FP activations and an FP
      teacher copy resident (the non-streaming reference for memory); eval_batch_size sequences per
      no_grad forward (FP targets, statistics).
    """

    data: str = DEFAULT_CALIB_DATA
    n: int = 128
    seq_len: int = 1024
    data_seed: int = 0
    floor: float = DEFAULT_FLOOR
    layout: str = "stream"
    masking: str = "none"
    window: int | None = None
    epochs: int = 15
    batch_size: int = 4
    lr: float = 5e-3
    clip_lr_mult: float = 10.0
    min_lr_ratio: float = 1e-3
    weight_decay: float = 0.0
    loss_normalize: bool = False
    nan_policy: str = "error"
    streaming: bool = True
    eval_batch_size: int = 8

    def __post_init__(self) -> None:
        check_str("data", self.data, "a text source (builtin:mix[:SPLIT], builtin:kjv[:SPLIT], PATH, hf:REPO...)")
        check_int("n", self.n, 1)
        check_int("seq_len", self.seq_len, 2)
        check_int("data_seed", self.data_seed, 0)
        check_float("floor", self.floor, 0.0)
        check_choice("layout", self.layout, LAYOUTS)
        check_choice("masking", self.masking, MASKINGS)
        if self.window is not None:
            check_int("window", self.window, 1)
        check_int("epochs", self.epochs, 0)
        check_int("batch_size", self.batch_size, 1)
        check_float("lr", self.lr, 0.0, lo_open=True)
        check_float("clip_lr_mult", self.clip_lr_mult, 0.0, lo_open=True)
        check_float("min_lr_ratio", self.min_lr_ratio, 0.0, 1.0)
        check_float("weight_decay", self.weight_decay, 0.0)
        check_bool("loss_normalize", self.loss_normalize)
        check_choice("nan_policy", self.nan_policy, NAN_POLICIES)
        check_bool("streaming", self.streaming)
        check_int("eval_batch_size", self.eval_batch_size, 1)

    def training_dict(self) -> dict:
        """The settings that change a block's trained result (the resume key's part): neither the data
        fields (the ids and weights are hashed themselves) nor streaming / eval batching."""
        skip = {"data", "n", "seq_len", "data_seed", "floor", "layout", "masking", "window", "streaming", "eval_batch_size", "format_version"}
        return {k: v for k, v in self.to_dict().items() if k not in skip}
