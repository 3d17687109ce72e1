"""Dispatch of the public `faircalib.kernels` API: importable without a GPU (and without importing
triton), "auto" uses the torch reference on CPU tensors, argument validation, forced backends."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from faircalib.kernels import packing

from faircalib import kernels as fk


def _run(code: str, **env) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    e.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e, timeout=120, check=False)


def test_import_and_auto_on_cpu_never_touch_triton():
    code = """
import sys, torch
import faircalib.kernels as fk
q = torch.randint(-8, 8, (4, 16), dtype=torch.int8)
p = fk.pack_int4(q)
a, s = fk.quantize_activation_int4(torch.randn(4, 16), p1=torch.eye(4), p2=torch.eye(4))
y = fk.w4a4_matmul(a, s, p, torch.ones(4))
assert y.shape == (4, 4) and y.dtype == torch.bfloat16
assert 'triton' not in sys.modules, 'triton imported'
print('ok')
"""
    r = _run(code, CUDA_VISIBLE_DEVICES="")
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_forced_triton_on_cpu_without_interpreter_is_a_clear_error():
    code = """
import torch, faircalib.kernels as fk
try:
    fk.pack_int4(torch.zeros(2, 4, dtype=torch.int8), backend='triton')
except RuntimeError as e:
    print('RuntimeError:', e)
"""
    r = _run(code, CUDA_VISIBLE_DEVICES="", TRITON_INTERPRET="0")
    assert "TRITON_INTERPRET=1" in r.stdout, r.stdout + r.stderr


def test_auto_equals_torch_on_cpu(gen):
    x = torch.randn(6, 32, generator=gen)
    a1, s1 = fk.quantize_activation_int4(x, clip=0.9)
    a2, s2 = fk.quantize_activation_int4(x, clip=0.9, backend="torch")
    assert torch.equal(a1, a2) and torch.equal(s1, s2)


def test_reference_roundtrip_is_packing_module(gen):
    q = torch.randint(-8, 8, (3, 10), generator=gen, dtype=torch.int8)
    assert torch.equal(fk.pack_int4(q), packing.pack_int4(q))
    assert torch.equal(fk.unpack_int4(fk.pack_int4(q)), q)


def test_validation_errors():
    p = torch.zeros(4, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match="backend"):
        fk.pack_int4(torch.zeros(2, 2, dtype=torch.int8), backend="cuda")
    with pytest.raises(ValueError, match="uint8"):
        fk.unpack_int4(torch.zeros(2, 2, dtype=torch.int8))
    with pytest.raises(ValueError, match="even"):
        fk.quantize_activation_int4(torch.randn(2, 7))
    with pytest.raises(ValueError, match="diag"):
        fk.quantize_activation_int4(torch.randn(2, 8), diag=torch.ones(4))
    with pytest.raises(ValueError, match="square"):
        fk.quantize_activation_int4(torch.randn(2, 8), p1=torch.ones(2, 4))
    with pytest.raises(ValueError, match="w_packed"):
        fk.w4a4_matmul(p, torch.ones(4), torch.zeros(3, 6, dtype=torch.uint8), torch.ones(3))
    with pytest.raises(ValueError, match="a_scale"):
        fk.w4a4_matmul(p, torch.ones(5), p, torch.ones(4))
    with pytest.raises(ValueError, match="out_dtype"):
        fk.w4a4_matmul(p, torch.ones(4), p, torch.ones(4), out_dtype=torch.int32)


def test_triton_backend_handles_empty_batch(dev):
    a, s = fk.quantize_activation_int4(torch.zeros(0, 16).to(dev), backend="triton")
    assert a.shape == (0, 8) and s.shape == (0,)
    y = fk.w4a4_matmul(a, s, torch.zeros(4, 8, dtype=torch.uint8).to(dev), torch.ones(4).to(dev), backend="triton")
    assert y.shape == (0, 4)
