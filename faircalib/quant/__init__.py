"""Quantization: quantizers, transforms, baselines (see SPEC.md §2)."""
