"""Bit settings: the names `w4a4`, `w3a4`, ... and what a width of 16 means (docs/method.md §5).

Boundary: constants and one check; no torch.
"""
from __future__ import annotations

from faircalib.configs import check_choice, fail

# setting -> (weight bits, activation bits); 16 = not quantized (A16 = weight-only quantization)
SETTINGS: dict[str, tuple[int, int]] = {"w4a4": (4, 4), "w3a4": (3, 4), "w8a8": (8, 8), "w4a8": (4, 8),
                                        "w4a16": (4, 16), "w8a16": (8, 16),
                                        "w4a3": (4, 3), "w3a3": (3, 3)}  # w4a3 / w3a3: stress settings (fidelity benchmark)
FP_BITS = 16


def check_bits(field: str, value: object) -> int:
    """A weight or activation width: 2..8, or 16 for unquantized."""
    if isinstance(value, bool) or not isinstance(value, int) or not (2 <= value <= 8 or value == FP_BITS):
        fail(field, f"an integer in 2..8, or {FP_BITS} for unquantized", value)
    return value


def parse_setting(field: str, setting: object) -> tuple[str, tuple[int, int]]:
    """'W4A4' / 'w4a4' -> ('w4a4', (4, 4)); ConfigError naming `field` otherwise."""
    key = setting.lower() if isinstance(setting, str) else setting
    check_choice(field, key, SETTINGS)
    return key, SETTINGS[key]
