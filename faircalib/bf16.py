"""bf16 matmuls at float32 speed on a CPU without bf16 units.

On an AVX2-only CPU (no AVX512-BF16 / AMX) torch runs a bf16 GEMM through a slow conversion path:
`cpu_bf16_slowdown()` measures 6-40x the float32 time there. The arithmetic of a bf16 GEMM is simple,
though: the operands are bf16 numbers, every product of two bf16 numbers is exact in float32 (8 + 8
significand bits < 24), the products are summed in float32 and the result is rounded to bf16. A float32
GEMM on the same (exactly representable) operands, rounded once to bf16, is that computation; it differs
from a native kernel only in the order of the float32 summation, the way native kernels differ from each
other (AMX vs AVX512-BF16 vs oneDNN's software path): about 1e-4 of the outputs by one bf16 ulp
(tests/faircalib/test_bf16.py, benchmarks/bf16_emulation.py).

    with bf16_autocast():            # torch.autocast("cpu", bfloat16), GEMMs emulated where bf16 is slow
        model(ids)
    with fast_bf16(model):           # a bf16 CPU model's inference where this CPU emulates bf16, else nothing
        model(ids)

`Bf16GemmEmulation` is a TorchDispatchMode: it sees the ops after autocast has cast their inputs, and
replaces aten.mm / addmm / bmm / baddbmm whose tensor inputs are all bf16 CPU tensors; every other op
runs unchanged. `fast_bf16` is what decoding (`faircalib.diffusion.window_logits`: generate, replay,
positional diagnostics, Stage I rollouts), log-likelihood scoring (lm-eval) and the FP-fidelity logits use,
so a bf16 checkpoint on an AVX2-only CPU decodes near float32 speed in bf16 memory (1.3-1.5x a float32
model's time, 2.5x faster than torch's bf16, at the 7-8B shapes); Stage II calibration
(faircalib.calibrate.engine) wraps its block loop in `fast_bf16(model, training=True)`.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from faircalib.devices import BF16_SLOW, cpu_bf16_slowdown

_aten = torch.ops.aten
_GEMMS = {_aten.mm.default, _aten.addmm.default, _aten.bmm.default, _aten.baddbmm.default}

KERNEL_NATIVE = "native bf16 GEMM"
KERNEL_EMULATED = "float32 GEMM on bf16 operands, rounded to bf16 (faircalib/bf16.py)"


class Bf16GemmEmulation(TorchDispatchMode):
    """Run bf16 CPU GEMMs (mm, addmm, bmm, baddbmm) as float32 GEMMs on the same bf16 values, output
    rounded once to bf16. `calls` counts the substituted ops (a test's evidence that the mode acted)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _GEMMS:
            tensors = [a for a in args if isinstance(a, torch.Tensor)]
            if tensors and all(t.dtype == torch.bfloat16 and t.device.type == "cpu" for t in tensors):
                self.calls += 1
                if func in _MATRIX_GEMMS and args[-1].numel() > CHUNK_ELEMENTS:
                    return _column_chunks(func, args, kwargs)
                up = tuple(a.float() if isinstance(a, torch.Tensor) else a for a in args)
                return func(*up, **kwargs).to(torch.bfloat16)
        return func(*args, **kwargs)


_MATRIX_GEMMS = {_aten.mm.default, _aten.addmm.default}
CHUNK_ELEMENTS = 1 << 24  # a weight above this (64 MB in float32) is upcast a column block at a time


def _column_chunks(func, args, kwargs) -> torch.Tensor:
    """mm(a, b) / addmm(c, a, b) with a large b (K, N) (a linear's weight, e.g. a 152064-row LM head: 2.2 GB
    in float32), a column block of b at a time, so the float32 copy never exceeds CHUNK_ELEMENTS. Every
    output element is still one float32 dot product of the same values, rounded once."""
    a, b = args[-2], args[-1]  # (M, K), (K, N)
    M, (K, N) = a.shape[0], b.shape
    c = None if func is _aten.mm.default else args[0].expand(M, N)  # addmm's input, broadcast (M, N)
    beta, alpha = kwargs.get("beta", 1), kwargs.get("alpha", 1)
    a32, out = a.float(), torch.empty(M, N, dtype=torch.bfloat16)  # (M, K), (M, N)
    step = max(1, CHUNK_ELEMENTS // max(K, 1))
    for j in range(0, N, step):
        bj = b[:, j:j + step].float()  # (K, n)
        if c is None:
            out[:, j:j + step] = a32 @ bj
        else:
            out[:, j:j + step] = torch.addmm(c[:, j:j + step].float(), a32, bj, beta=beta, alpha=alpha)
    return out


def emulate_bf16_here() -> bool:
    """True where this CPU emulates bf16 (cpu_bf16_slowdown() > BF16_SLOW), i.e. where the substitution pays."""
    return cpu_bf16_slowdown() > BF16_SLOW


def bf16_kernel(emulate: bool) -> str:
    """The name a result records for the bf16 GEMM it ran with."""
    return KERNEL_EMULATED if emulate else KERNEL_NATIVE


def fast_bf16(model: Any, *, training: bool = False) -> contextlib.AbstractContextManager:
    """A Bf16GemmEmulation when `model`'s weights are bf16 on CPU and this CPU emulates bf16; otherwise a
    no-op context. For inference calls grad must be disabled; training=True (Stage II calibration) keeps
    it under autograd: the mode sits below autograd, so autograd records the bf16 ops and the backward
    pass's GEMMs, run inside the same context, are substituted too."""
    params = model.parameters() if hasattr(model, "parameters") else iter(())
    p = next(iter(params), None)
    if (p is None or p.dtype != torch.bfloat16 or p.device.type != "cpu"
            or (torch.is_grad_enabled() and not training) or not emulate_bf16_here()):
        return contextlib.nullcontext()
    return Bf16GemmEmulation()


@contextlib.contextmanager
def bf16_autocast(emulate: bool | None = None) -> Iterator[Bf16GemmEmulation | None]:
    """CPU bf16 autocast; `emulate` None = where this CPU emulates bf16 (emulate_bf16_here()). Yields the
    active Bf16GemmEmulation, or None when the native kernels run."""
    if emulate is None:
        emulate = emulate_bf16_here()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        if not emulate:
            yield None
            return
        with Bf16GemmEmulation() as mode:
            yield mode
