"""The method registry is the one source of method lists and traits."""
import pytest

from faircalib.errors import ConfigError
from faircalib.pipeline import MethodConfig
from faircalib.quant.bits import SETTINGS
from faircalib.quant.config import QuantConfig
from faircalib.quant.methods import REGISTRY, MethodSpec, Stage2Hooks, method_spec, methods, quant_methods


def test_registry_traits():
    assert methods() == ("fp", "rtn", "quarot", "flatquant", "qdrop", "faircalib")
    assert quant_methods() == methods()[1:]
    assert [n for n, s in REGISTRY.items() if s.needs_data] == ["quarot", "flatquant", "qdrop", "faircalib"]
    assert [n for n, s in REGISTRY.items() if s.learned] == ["flatquant", "qdrop", "faircalib"]
    assert {n: s.transform for n, s in REGISTRY.items() if s.transform != "none"} == {
        "quarot": "hadamard", "flatquant": "kronecker", "faircalib": "kronecker"}
    assert {n: s.prior for n, s in REGISTRY.items() if s.prior != "never"} == {"qdrop": "optional",
                                                                              "faircalib": "required"}
    assert all(s.bits == tuple(SETTINGS) for s in REGISTRY.values())
    assert {"w4a4", "w3a4", "w8a8", "w4a8", "w4a16", "w8a16"} <= set(SETTINGS)
    assert method_spec("quarot").stage2.solve_block is not None and method_spec("rtn").stage2 is None
    with pytest.raises(ConfigError, match=r"^method: 'gptq' is not allowed; allowed: fp, rtn"):
        method_spec("gptq")


def test_configs_derive_from_the_registry():
    for name in quant_methods():
        q, spec = QuantConfig(method=name), method_spec(name)
        assert (q.learned, q.needs_data, q.uses_transforms) == (spec.learned, spec.needs_data,
                                                               spec.transform == "kronecker")
    assert MethodConfig(method="faircalib").uses_prior and not MethodConfig(method="qdrop").uses_prior
    assert MethodConfig(method="qdrop", qdrop_weighted=True).uses_prior
    assert not MethodConfig(method="fp").needs_calibration_data and MethodConfig(method="quarot").needs_calibration_data


def test_spec_consistency_is_checked():
    with pytest.raises(ValueError, match="exactly when it has Stage II hooks"):
        MethodSpec("x", "bad", needs_data=True)
    with pytest.raises(ValueError, match="trained by the engine"):
        MethodSpec("x", "bad", needs_data=True, learned=True, stage2=Stage2Hooks(solve_block=lambda *a: {}))
    with pytest.raises(ConfigError, match="transform"):
        MethodSpec("x", "bad", transform="wavelet")
