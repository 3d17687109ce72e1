"""The worker process's model cache: a model is loaded once per worker process and reused by every
stage and job that runs there on the same weights (probe, calibrate and evaluate of one job, and the
next job on the same model), bounded by an LRU of FAIRCALIB_WORKER_MODELS entries (default 2).

Keyed by (source, device, identity of the files): the resolved directory's config.json and the
(name, size, mtime) of its weight files, so a model directory rewritten in place is loaded again.
Callers must not modify the cached model: calibration quantizes a deep copy (`fresh_copy`).

Boundary: process-local caching around faircalib.models.load_dllm; no Ray, no storage.
"""
from __future__ import annotations

import copy
import os
import threading
from collections import OrderedDict
from typing import Any

_CACHE: OrderedDict[tuple, Any] = OrderedDict()
_LOCK = threading.Lock()
STATS = {"loads": 0, "hits": 0}


def _capacity() -> int:
    try:
        return max(1, int(os.environ.get("FAIRCALIB_WORKER_MODELS", "2")))
    except ValueError:
        return 2


def _identity(source: str) -> tuple:
    from faircalib.models import resolve_source
    from faircalib.models.io import weight_files

    path = resolve_source(source)
    files = [path / "config.json", *weight_files(path)]
    return (str(path), tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files))


def load_cached(source: str, device: str = "cpu"):
    """faircalib.models.load_dllm(source, device=device), loaded at most once per process (LRU)."""
    from faircalib.models import load_dllm

    key = (str(source), str(device), _identity(str(source)))
    with _LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            STATS["hits"] += 1
            return _CACHE[key]
    loaded = load_dllm(source, device=device)
    with _LOCK:
        _CACHE[key] = loaded
        STATS["loads"] += 1
        while len(_CACHE) > _capacity():
            _CACHE.popitem(last=False)
    return loaded


def fresh_copy(loaded):
    """A LoadedDLLM whose model may be modified (quantized in place) without touching the cache's."""
    import dataclasses

    model = copy.deepcopy(loaded.model)
    return dataclasses.replace(loaded, model=model, adapter=type(loaded.adapter)(model))
