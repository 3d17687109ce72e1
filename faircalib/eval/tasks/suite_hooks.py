"""Hooks the faircalib task YAMLs reference with `!function suite_hooks.NAME` (lm-eval loads this file
by path); the implementations live in faircalib.eval.suite."""
from faircalib.eval.suite import load_dataset, process_exact_match

__all__ = ["load_dataset", "process_exact_match"]
