"""Where computation runs: the one device-resolution rule used by the CLI (`--device`), `run_method`,
`probe_prior`, calibration and evaluation.

    resolve_device("auto")    -> cuda:<current> when CUDA is available, else cpu
    resolve_device("cpu")     -> cpu
    resolve_device("cuda")    -> cuda:<current>   (ConfigError when CUDA is unavailable)
    resolve_device("cuda:1")  -> cuda:1           (ConfigError when there is no device 1)

Anything else (mps, gpu, "cuda:x", ...) is a ConfigError naming the allowed values. The weights' dtype
has one rule too (`--dtype` on the CLI, `resources.dtype` in a job):

    resolve_dtype("auto", "cuda:0") -> torch.bfloat16
    resolve_dtype("auto", "cpu")    -> None  (the dtype the checkpoint is stored in)
    resolve_dtype("float32")        -> torch.float32   (also fp32; bfloat16 / bf16, float16 / fp16)

Module boundary: pure resolution; moving and casting models is the caller's business.
`cpu_bf16_slowdown()` measures whether this CPU has bf16 matmul units (AVX512-BF16 / AMX) or emulates
bf16 (AVX2 only: ~20x slower than float32).
"""
from __future__ import annotations

import contextlib
import functools
import re
import time
from collections.abc import Iterator

import torch

from faircalib.errors import ConfigError

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N"
_CUDA = re.compile(r"^cuda(?::(\d+))?$")


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """`device` (auto | cpu | cuda | cuda:N, or a torch.device; None = auto) -> a concrete torch.device."""
    if isinstance(device, torch.device):
        device = str(device)
    spec = "auto" if device is None else str(device).strip().lower()
    if spec == "auto":
        return _cuda_device(None) if torch.cuda.is_available() else torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    m = _CUDA.match(spec)
    if m is None:
        raise ConfigError(f"device={device!r} is not supported; use one of {DEVICE_CHOICES}")
    if not torch.cuda.is_available():
        raise ConfigError(f"device={device!r} but no CUDA device is available (torch.cuda.is_available() is "
                          f"False); use --device cpu or --device auto")
    return _cuda_device(None if m.group(1) is None else int(m.group(1)))


DTYPE_CHOICES = "auto, bfloat16, float32, float16"
_DTYPES = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float32": torch.float32, "fp32": torch.float32,
           "float16": torch.float16, "fp16": torch.float16}


def resolve_dtype(dtype: str | torch.dtype | None = "auto",
                  device: str | torch.device | None = "cpu") -> torch.dtype | None:
    """The dtype to load a model's weights in. "auto" (or None): bfloat16 on CUDA; on CPU None, i.e. the
    dtype the weights are stored in (a bf16 checkpoint stays bf16 instead of doubling its memory; on a CPU
    without bf16 units, cpu_bf16_slowdown() > BF16_SLOW, "float32" is ~20x faster at twice the bytes)."""
    if isinstance(dtype, torch.dtype):
        if dtype not in _DTYPES.values():
            raise ConfigError(f"dtype={dtype} is not supported; use one of {DTYPE_CHOICES}", field="dtype")
        return dtype
    spec = "auto" if dtype is None else str(dtype).strip().lower().removeprefix("torch.")
    if spec == "auto":
        on_cuda = torch.device(device if device is not None else "cpu").type == "cuda"
        return torch.bfloat16 if on_cuda else None
    if spec not in _DTYPES:
        raise ConfigError(f"dtype={dtype!r} is not supported; use one of {DTYPE_CHOICES}", field="dtype")
    return _DTYPES[spec]


def _cuda_device(index: int | None) -> torch.device:
    n = torch.cuda.device_count()
    if index is None:
        index = torch.cuda.current_device() if n else 0
    if not 0 <= index < n:
        raise ConfigError(f"device='cuda:{index}' does not exist: this machine has {n} CUDA device(s) "
                          f"(cuda:0..cuda:{max(n - 1, 0)}); pick one of them or --device auto")
    return torch.device("cuda", index)


def describe_device(device: torch.device) -> str:
    """A human-readable name: 'cpu' or 'cuda:0 (NVIDIA H100 80GB HBM3)'."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def module_device(module: torch.nn.Module) -> torch.device:
    """Where a module's first parameter (else buffer) lives; cpu for an empty module."""
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


@contextlib.contextmanager
def on_device(module: torch.nn.Module, device: str | torch.device | None) -> Iterator[torch.device]:
    """Run a block of code with `module` on `device` (resolved; None = auto), then put it back where it was
    (e.g. probe on the GPU, then calibrate from the host)."""
    target = resolve_device(device)
    home = module_device(module)
    moved = target != home
    if moved:
        module.to(target)
    try:
        yield target
    finally:
        if moved:
            module.to(home)


BF16_SLOW = 2.0  # cpu_bf16_slowdown() above this: bf16 is emulated on this CPU, use float32


@functools.cache
def cpu_bf16_slowdown() -> float:
    """How many times longer a bf16 matmul takes than the same float32 one on this CPU, with this
    process's torch threads (measured once per process, a fraction of a second). About 0.3-1 where the
    CPU has bf16 units (AVX512-BF16, AMX); about 20-25 on an AVX2-only CPU, where torch converts in
    software (measured 3.26 s vs 0.136 s for (5000, 512) x (512, 512) on an AVX2 EPYC)."""
    a, b = torch.randn(256, 512), torch.randn(512, 512)  # (M, K), (K, N)

    def best(x: torch.Tensor, y: torch.Tensor) -> float:
        x @ y  # warm-up
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            x @ y
            times.append(time.perf_counter() - t0)
        return min(times)

    return best(a.bfloat16(), b.bfloat16()) / max(best(a, b), 1e-9)
