"""The benchmark scripts are files, not a package: `load_bench("scale")` imports benchmarks/scale.py."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))  # a benchmark may import its siblings (fidelity -> fidelity_report)
    spec = importlib.util.spec_from_file_location(f"faircalib_bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def load_bench():
    return _load
