"""The service's finite-output checks at stage boundaries, on top of the library's (faircalib.finite):
loading (load_dllm refuses NaN/inf weights, in every actor), probing (probe_priors refuses non-finite
rollout logits and priors, so no prior of a broken model reaches the cache), quantizing (quantize()
refuses a non-finite quantized model, so no such checkpoint is uploaded) and, here, evaluating: every
metric the eval actors return must be finite. Each failure is a NonFiniteError, i.e. a one-line job
reason naming the stage and the first non-finite tensor or metric.
"""
from __future__ import annotations

from faircalib.finite import check_metrics


def check_stage_metrics(ctx, metrics: dict) -> None:
    """NonFiniteError naming the first NaN/inf metric of the evaluate stage ({task: {variant: {metric}}})."""
    variant = "quantized model" if ctx.config.method != "fp" else "model"
    check_metrics(metrics, where=f"evaluate: the {variant}'s results",
                  fix="its outputs are NaN/inf (diverged or overflowing weights or activations); check the model "
                      "with `faircalib models inspect` and the calibration settings")
