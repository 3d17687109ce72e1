"""Finite-value checks at stage boundaries: after loading weights, after probing (the rollout logits and
the prior), after quantizing (every parameter and buffer of the quantized model) and after evaluating
(every metric). A NaN or inf anywhere fails with a one-line `NonFiniteError` naming the stage, the first
non-finite tensor or metric, and what to do, instead of a "succeeded" run with NaN results.

    check_tensors(sf_items, where="model.safetensors", fix="re-export the weights")
    check_module(model, where="quantized model (rtn w4a4)", fix="...")
    check_metrics({"fidelity": {"quantized": {"nll": nan}}}, where="evaluation", fix="...")

Boundary: pure checks; no I/O.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from faircalib.errors import NonFiniteError


CHUNK = 1 << 22  # elements checked at a time


def describe_non_finite(t: torch.Tensor) -> str | None:
    """None when every value of `t` is finite (or `t` is not floating point), else e.g. '3 of 4096 values
    non-finite (nan)'.

    Checked CHUNK elements at a time: `torch.isfinite` of a whole bf16 tensor materialises float32 and bool
    copies of it (+2.5 GB and 9 s for LLaDA-8B's 126464 x 4096 embedding, measured), chunked it is +0.07 GB
    and 3.3 s, so loading a real checkpoint costs no more memory than its largest tensor's chunk."""
    if not (t.is_floating_point() or t.is_complex()) or t.numel() == 0:
        return None
    flat = torch.view_as_real(t).reshape(-1) if t.is_complex() else t.reshape(-1)  # (numel,) a view if contiguous
    n, nan, inf = 0, False, False
    for c in flat.split(CHUNK):
        if bool(torch.isfinite(c).all()):
            continue
        n += int((~torch.isfinite(c)).sum())
        nan = nan or bool(torch.isnan(c).any())
        inf = inf or bool(torch.isinf(c).any())
    if n == 0:
        return None
    if t.is_complex():  # count complex values, not their real/imaginary parts
        bad = ~torch.isfinite(torch.view_as_real(t)).all(-1)
        n = int(bad.sum())
    kinds = [k for k, present in (("nan", nan), ("inf", inf)) if present]
    return f"{n} of {t.numel()} values non-finite ({', '.join(kinds)})"


def check_tensors(named: Iterable[tuple[str, torch.Tensor]], *, where: str, fix: str) -> None:
    """NonFiniteError naming the first tensor of `named` ((name, tensor) pairs) with a NaN or inf."""
    for name, t in named:
        what = describe_non_finite(t)
        if what:
            raise NonFiniteError(f"{where}: tensor {name} has {what}; {fix}")


def check_module(module: torch.nn.Module, *, where: str, fix: str) -> None:
    """Every parameter and buffer of `module` must be finite (NonFiniteError names the first that is not)."""
    check_tensors(module.state_dict().items(), where=where, fix=fix)


def first_non_finite_metric(obj: Any, path: str = "", *,
                            skip_suffixes: tuple[str, ...] = ("stderr",)) -> tuple[str, Any] | None:
    """(dotted path, value) of the first non-finite number in nested dicts/lists, or None. Keys ending
    in one of `skip_suffixes` (lm-eval's `acc_stderr`, NaN for a sample of one) are skipped."""
    if isinstance(obj, bool) or obj is None:
        return None
    if isinstance(obj, (int, float)):
        return None if math.isfinite(obj) else (path, obj)
    if isinstance(obj, torch.Tensor):
        return (path, describe_non_finite(obj)) if describe_non_finite(obj) else None
    if isinstance(obj, Mapping):
        items = [(str(k), v, f"{path}.{k}" if path else str(k)) for k, v in obj.items()]
    elif isinstance(obj, (list, tuple)):
        items = [(str(i), v, f"{path}[{i}]") for i, v in enumerate(obj)]
    else:
        return None
    for key, v, sub in items:
        if key.endswith(skip_suffixes):
            continue
        found = first_non_finite_metric(v, sub, skip_suffixes=skip_suffixes)
        if found:
            return found
    return None


def check_metrics(metrics: Any, *, where: str, fix: str) -> None:
    """NonFiniteError naming the first non-finite metric (dotted path and value)."""
    found = first_non_finite_metric(metrics)
    if found:
        raise NonFiniteError(f"{where}: metric {found[0]} is {found[1]}; {fix}")
