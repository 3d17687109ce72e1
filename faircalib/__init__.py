"""FAIR-Calib: frontier-aware, instability-reweighted calibration for diffusion LLMs."""
__version__ = "0.1.0"
