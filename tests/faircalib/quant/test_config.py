import pytest

from faircalib.calibrate import CalibConfig
from faircalib.errors import ConfigError
from faircalib.quant.config import QuantConfig


def test_from_bits_settings():
    assert (QuantConfig.from_bits("W4A4").w_bits, QuantConfig.from_bits("w4a4").a_bits) == (4, 4)
    assert (QuantConfig.from_bits("w3a4", method="rtn").w_bits, QuantConfig.from_bits("w8a8").a_bits) == (3, 8)
    assert QuantConfig.from_bits("w4a16").a_bits == 16 and QuantConfig.from_bits("w8a8").setting == "w8a8"
    with pytest.raises(ConfigError, match=r"^bits: 'w5a5' is not allowed; allowed: w4a4, w3a4, w8a8, w4a8, w4a16"):
        QuantConfig.from_bits("w5a5")


@pytest.mark.parametrize("kw, match", [
    ({"method": "gptq"}, r"^method: 'gptq' is not allowed; allowed: rtn, quarot, flatquant, qdrop, faircalib$"),
    ({"method": "fp"}, r"^method: 'fp' is not allowed"),  # fp quantizes nothing
    ({"w_bits": 1}, r"^w_bits: expected an integer in 2\.\.8"), ({"a_bits": 12}, r"^a_bits: "),
    ({"w_bits": 16, "a_bits": 4}, "needs a_bits=16"),
    ({"linears": ("q", "k")}, "splits the 'qkv' group"), ({"linears": ("q", "k", "v", "lm")}, "'lm'"),
    ({"qdrop_prob": 1.0}, r"^qdrop_prob: expected a number in \[0\.0, 1\.0\)"), ({"smooth_alpha": 2.0}, "^smooth_alpha"),
])
def test_quant_config_validation(kw, match):
    with pytest.raises(ConfigError, match=match):
        QuantConfig(**kw)


def test_points_follow_linears_and_json_roundtrip():
    q = QuantConfig(linears=("gate", "up", "down"), method="qdrop", seed=3)
    assert q.points == ("gate_up", "down") and q.learned and not q.uses_transforms
    d = q.to_dict()
    assert d["linears"] == ["gate", "up", "down"] and d["format_version"] == QuantConfig.FORMAT_VERSION
    assert QuantConfig.from_dict(d) == q
    assert QuantConfig().points == ("qkv", "o", "gate_up", "down")
    with pytest.raises(ConfigError, match=r"^bits: unknown field; allowed: method, w_bits"):
        QuantConfig.from_dict({"bits": 4})
    with pytest.raises(ConfigError, match=r"^format_version: QuantConfig format 99 is not 1"):
        QuantConfig.from_dict({"format_version": 99})


def test_calib_config_defaults_and_validation():
    c = CalibConfig()
    assert (c.epochs, c.batch_size, c.lr, c.clip_lr_mult, c.min_lr_ratio, c.nan_policy) == (15, 4, 5e-3, 10.0, 1e-3,
                                                                                           "error")
    assert (c.data, c.n, c.seq_len, c.data_seed, c.floor) == ("builtin:mix:train", 128, 1024, 0, 0.1)
    assert CalibConfig.from_dict(c.to_dict()) == c
    assert set(c.training_dict()) == {"epochs", "batch_size", "lr", "clip_lr_mult", "min_lr_ratio", "weight_decay",
                                      "loss_normalize", "nan_policy"}
    with pytest.raises(ConfigError, match=r"^nan_policy: 'skip' is not allowed; allowed: error, rtn$"):
        CalibConfig(nan_policy="skip")
    with pytest.raises(ConfigError, match=r"^lr: expected a number > 0\.0, got 0"):
        CalibConfig(lr=0)
