import pytest

from faircalib.errors import ConfigError
from faircalib.calibrate import CalibConfig
from faircalib.quant.config import QuantConfig


def test_from_bits_settings():
    assert (QuantConfig.from_bits("W4A4").w_bits, QuantConfig.from_bits("w4a4").a_bits) == (4, 4)
    assert (QuantConfig.from_bits("w3a4", method="rtn").w_bits, QuantConfig.from_bits("w8a8").a_bits) == (3, 8)
    assert QuantConfig.from_bits("w4a16").a_bits == 16 and QuantConfig.from_bits("w8a8").setting == "w8a8"
    with pytest.raises(ConfigError, match="setting='w5a5'.*allowed"):
        QuantConfig.from_bits("w5a5")


@pytest.mark.parametrize("kw, match", [
    ({"method": "gptq"}, "method='gptq'.*allowed: rtn, quarot, flatquant, qdrop, faircalib"),
    ({"w_bits": 1}, "w_bits=1"), ({"a_bits": 12}, "a_bits=12"),
    ({"w_bits": 16, "a_bits": 4}, "needs a_bits=16"),
    ({"linears": ("q", "k")}, "splits the 'qkv' group"), ({"linears": ("q", "k", "v", "lm")}, "'lm'"),
    ({"qdrop_prob": 1.0}, "qdrop_prob"), ({"smooth_alpha": 2.0}, "smooth_alpha"),
])
def test_quant_config_validation(kw, match):
    with pytest.raises(ConfigError, match=match):
        QuantConfig(**kw)


def test_points_follow_linears_and_json_roundtrip():
    q = QuantConfig(linears=("gate", "up", "down"), method="qdrop", seed=3)
    assert q.points == ("gate_up", "down") and q.learned and not q.uses_transforms
    assert QuantConfig.from_dict(q.to_dict()) == q
    assert QuantConfig().points == ("qkv", "o", "gate_up", "down")
    with pytest.raises(ConfigError, match="unknown QuantConfig field 'bits'"):
        QuantConfig.from_dict({"bits": 4})


def test_calib_config_defaults_and_validation():
    c = CalibConfig()
    assert (c.epochs, c.batch_size, c.lr, c.clip_lr_mult, c.min_lr_ratio, c.nan_policy) == (15, 4, 5e-3, 10.0, 1e-3,
                                                                                           "error")
    assert CalibConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ConfigError, match="nan_policy='skip'.*allowed: error, rtn"):
        CalibConfig(nan_policy="skip")
    with pytest.raises(ConfigError, match="lr=0"):
        CalibConfig(lr=0)
