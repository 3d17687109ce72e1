"""Quantization numerics: bit settings, the method registry, quantizers, int packing, transforms
(Kronecker, Hadamard), GPTQ, fake-quant and runtime modules (docs/method.md §5). Stage II and the
`quantize` entry point are `faircalib.calibrate`, which builds on this package."""
from faircalib.quant.bits import FP_BITS, SETTINGS
from faircalib.quant.config import QuantConfig
from faircalib.quant.methods import REGISTRY, MethodSpec, method_spec, methods, quant_methods

__all__ = ["FP_BITS", "REGISTRY", "SETTINGS", "MethodSpec", "QuantConfig", "method_spec", "methods",
           "quant_methods"]
