"""`evaluate_models`: the evaluation entry point for an `EvalConfig` — the FP model and, optionally, a
quantized one, on every task of the config (or a subset: the job service hands each eval actor a
shard of the task list), with the same data, settings and decoding for both.

    res = evaluate_models(fp.model, fp.tokenizer, EvalConfig(tasks=("fidelity", "faircalib_arith")),
                          quantized=q.model, decoding=decoding_defaults("zoo:tiny-llada"))
    res["fidelity"]["quantized"]["kl_to_ref"]; res["faircalib_arith"]["fp"]["tasks"]

Result: {task: {"fp": ..., "quantized": ...}}. `fidelity` (faircalib.eval.fidelity.compare_to_reference
on cfg.n x cfg.seq_len tokens of cfg.data drawn with cfg.seed: masked-token NLL of each model, and of the
quantized model its KL to the FP model and top-1 agreement; plus "sequences", "seq_len", "data");
any other name: faircalib.eval.harness.run_lm_eval's whole result per variant.

Boundary: calls the fidelity metrics and the lm-eval runner; computes no metric itself.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from faircalib.errors import DataError
from faircalib.eval.settings import FIDELITY, EvalConfig

Report = Callable[[dict], None]


def fidelity_ids(tokenizer, cfg: EvalConfig):
    """(n, seq_len) held-out token ids of the fidelity evaluation."""
    from faircalib.data import sample_token_sequences

    if tokenizer is None:
        raise DataError("the fidelity evaluation needs a tokenizer to tokenize its held-out text; the model ships none")
    return sample_token_sequences(tokenizer, cfg.data, cfg.n, cfg.seq_len, seed=cfg.seed)


def _fidelity(fp, tokenizer, cfg: EvalConfig, quantized, report: Report, fp_result: dict | None = None) -> dict:
    from faircalib.eval.fidelity import compare_to_reference

    ids = fidelity_ids(tokenizer, cfg)
    out: dict[str, Any] = {"sequences": int(ids.shape[0]), "seq_len": int(ids.shape[1]), "data": cfg.data}
    if fp_result is not None:
        out["fp"] = dict(fp_result)
        report({"message": f"fidelity: FP nll {out['fp']['nll']:.4f} (cached FP baseline)"})
    else:
        t0 = time.perf_counter()
        out["fp"] = compare_to_reference(fp, ids, seed=cfg.seed).as_dict()
        out["fp"]["wall_s"] = round(time.perf_counter() - t0, 3)
        report({"message": f"fidelity: FP nll {out['fp']['nll']:.4f}"})
    if quantized is not None:
        t0 = time.perf_counter()
        q = compare_to_reference(quantized, ids, ref=fp, seed=cfg.seed).as_dict()
        q["wall_s"] = round(time.perf_counter() - t0, 3)
        out["quantized"] = q
        report({"message": f"fidelity: quantized nll {q['nll']:.4f}, KL {q['kl_to_ref']:.4g}"})
    return out


def _lm_eval(name: str, fp, tokenizer, cfg: EvalConfig, quantized, decoding: dict, source: str | None,
             report: Report, fp_result: dict | None = None) -> dict:
    from faircalib.eval.harness import run_lm_eval

    if tokenizer is None:
        raise DataError(f"lm-eval task {name!r} needs a tokenizer; the model ships none")
    out: dict[str, Any] = {}
    if fp_result is not None:
        out["fp"] = fp_result
        report({"message": f"[fp] {name}: cached FP baseline"})
    for variant, model in (("fp", fp), ("quantized", quantized)):
        if model is None or variant in out:
            continue

        def tagged(e: dict, variant=variant) -> None:
            report({**e, "message": f"[{variant}] {e.get('message', '')}"})

        out[variant] = run_lm_eval(model, tokenizer, [name], limit=cfg.limit, mc_num=cfg.mc_num,
                                   batch_size=cfg.batch_size, gen_batch_size=cfg.gen_batch_size, decoding=decoding,
                                   seed=cfg.seed, check_greedy=cfg.check_greedy, exact_when_cheap=cfg.exact_when_cheap,
                                   bootstrap_iters=cfg.bootstrap_iters, source=source, progress=False, report=tagged)
    return out


def evaluate_models(fp, tokenizer, cfg: EvalConfig, *, quantized=None, tasks: Sequence[str] | None = None,
                    decoding: dict | None = None, source: str | None = None,
                    report: Report | None = None, fp_results: Mapping[str, dict] | None = None) -> dict[str, dict]:
    """Run `tasks` (default cfg.tasks) on the FP model and `quantized` (see the module docstring).
    decoding: the model's decoding defaults (faircalib.models.model_decoding(...).values), overridden by
    cfg.decoding, for lm-eval generation tasks. fp_results: {task: the "fp" entry of an earlier run
    with the same FP baseline key (faircalib.eval.settings.fp_baseline_key)}: reused, not recomputed
    (the FP model is still the reference of the quantized model's fidelity)."""
    emit = report or (lambda e: None)
    dec = {**(decoding or {}), **dict(cfg.decoding)}
    cached = dict(fp_results or {})
    out: dict[str, dict] = {}
    for name in (cfg.tasks if tasks is None else tasks):
        emit({"message": f"evaluating {name}"})
        if name == FIDELITY:
            out[name] = _fidelity(fp, tokenizer, cfg, quantized, emit, cached.get(name))
        else:
            out[name] = _lm_eval(name, fp, tokenizer, cfg, quantized, dec, source, emit, cached.get(name))
    return out
