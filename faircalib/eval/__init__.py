"""Evaluation: fast fidelity metrics (masked-token NLL, KL / top-1 agreement to a reference model),
task exact match, and the lm-eval model class."""
from faircalib.eval.fidelity import FidelityResult, compare_to_reference, mask_batch, masked_token_nll

__all__ = ["FidelityResult", "compare_to_reference", "mask_batch", "masked_token_nll"]
