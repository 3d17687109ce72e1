"""Evaluation: fast fidelity metrics (masked-token NLL, KL / top-1 agreement to a reference model),
task exact match, masked-diffusion log-likelihood estimates, and lm-eval-harness integration (the
`faircalib` lm-eval model class, the offline task suite, `run_lm_eval` / `evaluate_source`).

lm-eval is imported only when its parts are used (`faircalib.eval.lm`, `faircalib.eval.harness`)."""
from typing import Any

from faircalib.eval.fidelity import FidelityResult, compare_to_reference, mask_batch, masked_token_nll
from faircalib.eval.loglik import greedy_matches, masked_loglikelihood, masked_nll, rolling_pairs

_LAZY = {"run_lm_eval": "harness", "evaluate_source": "harness", "load_for_eval": "loading",
         "format_table": "harness", "FaircalibLM": "lm", "LMEvalSettings": "settings", "EvalConfig": "settings",
         "evaluate_models": "run"}

__all__ = ["EvalConfig", "FaircalibLM", "FidelityResult", "LMEvalSettings", "evaluate_models", "compare_to_reference", "evaluate_source",
           "format_table", "greedy_matches", "load_for_eval", "mask_batch", "masked_loglikelihood", "masked_nll",
           "masked_token_nll", "rolling_pairs", "run_lm_eval"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"faircalib.eval.{_LAZY[name]}"), name)
    raise AttributeError(name)
