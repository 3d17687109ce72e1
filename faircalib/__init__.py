"""FAIR-Calib: frontier-aware, instability-reweighted calibration for diffusion LLMs."""
__version__ = "0.1.0"


def __getattr__(name: str):
    """`faircalib.quantize_model` / `faircalib.QuantizedModel` (faircalib.api), imported on first use so
    that `import faircalib` stays light."""
    if name in ("quantize_model", "QuantizedModel"):
        from faircalib import api

        return getattr(api, name)
    raise AttributeError(f"module 'faircalib' has no attribute {name!r}")


__all__ = ["QuantizedModel", "__version__", "quantize_model"]
