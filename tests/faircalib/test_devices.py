"""Device resolution: auto / cpu / cuda / cuda:N, with and without (faked) CUDA devices."""
from __future__ import annotations

import pytest
import torch

from faircalib.devices import resolve_device
from faircalib.errors import ConfigError


def fake_cuda(monkeypatch, n: int, current: int = 0) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: current)


def test_without_cuda(monkeypatch):
    fake_cuda(monkeypatch, 0)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_device("CPU") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    for spec in ("cuda", "cuda:0"):
        with pytest.raises(ConfigError, match="no CUDA device is available"):
            resolve_device(spec)


def test_with_cuda(monkeypatch):
    fake_cuda(monkeypatch, 2, current=1)
    assert resolve_device("auto") == torch.device("cuda", 1)  # the current device
    assert resolve_device("cuda") == torch.device("cuda", 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    assert resolve_device(" cuda:1 ") == torch.device("cuda", 1)
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match=r"cuda:2.*2 CUDA device\(s\)"):
        resolve_device("cuda:2")


@pytest.mark.parametrize("bad", ["gpu", "mps", "cuda:x", "cuda:-1", "", "cuda0"])
def test_unknown_device_names(monkeypatch, bad):
    fake_cuda(monkeypatch, 1)
    with pytest.raises(ConfigError, match="auto, cpu, cuda, cuda:N"):
        resolve_device(bad)


def test_cpu_bf16_slowdown_is_measured_once_and_flags_an_avx2_only_cpu():
    from faircalib.devices import BF16_SLOW, cpu_bf16_slowdown

    slow = cpu_bf16_slowdown()
    assert 0 < slow < 1000 and cpu_bf16_slowdown() == slow  # cached: one measurement per process
    if torch.backends.cpu.get_cpu_capability() == "AVX2":  # no bf16 units: torch emulates bf16 matmuls
        assert slow > BF16_SLOW


def test_resolve_dtype(monkeypatch):
    from faircalib.devices import resolve_dtype

    fake_cuda(monkeypatch, 1)
    assert resolve_dtype("auto", "cuda:0") is torch.bfloat16  # a GPU computes in bf16
    assert resolve_dtype("auto", "cpu") is None and resolve_dtype(None) is None  # CPU: the stored dtype
    for spec, want in (("float32", torch.float32), ("FP32", torch.float32), ("torch.bfloat16", torch.bfloat16),
                       (" bf16 ", torch.bfloat16), ("float16", torch.float16), (torch.float32, torch.float32)):
        assert resolve_dtype(spec, "cuda:0") is want and resolve_dtype(spec, "cpu") is want
    for bad in ("int8", "double", "", torch.int8):
        with pytest.raises(ConfigError, match="use one of auto, bfloat16, float32, float16"):
            resolve_dtype(bad)
