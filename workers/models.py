"""The worker process's model cache: a model is loaded once per worker process and reused by every
stage and job that runs there on the same weights (probe, calibrate and evaluate of one job, and the
next job on the same model), bounded by an LRU of FAIRCALIB_WORKER_MODELS entries (default 2).

Keyed by (source, device, dtype, identity of the files): the resolved directory's config.json and the
(name, size, mtime) of its weight files, so a model directory rewritten in place is loaded again.
Callers must not modify the cached model; calibration takes `load_modifiable`'s model instead: a deep
copy of a cached model of up to FAIRCALIB_WORKER_COPY_MAX_GB (default 2), so the cache stays warm for the
next stage; a larger model is taken out of the cache (or loaded without caching) and quantized in place,
since a copy would hold it twice in host memory (2 x 16 GB for LLaDA-8B in bf16; measured on the
Dream-7B shape at 2 layers, the calibrate actor peaked at 10.1 GB with the copy). The next stage that
needs that model loads it again.

Boundary: process-local caching around faircalib.models.load_dllm; no Ray, no storage.
"""
from __future__ import annotations

import copy
import logging
import os
import threading
from collections import OrderedDict
from typing import Any

log = logging.getLogger(__name__)
_CACHE: OrderedDict[tuple, Any] = OrderedDict()
_LOCK = threading.Lock()
STATS = {"loads": 0, "hits": 0, "taken": 0}
COPY_MAX_GB_VAR = "FAIRCALIB_WORKER_COPY_MAX_GB"
DEFAULT_COPY_MAX_GB = 2.0


def _capacity() -> int:
    try:
        return max(1, int(os.environ.get("FAIRCALIB_WORKER_MODELS", "2")))
    except ValueError:
        return 2


def _copy_max_bytes() -> float:
    raw = os.environ.get(COPY_MAX_GB_VAR, str(DEFAULT_COPY_MAX_GB))
    try:
        return float(raw) * 2 ** 30
    except ValueError:
        log.warning("%s=%r is not a number of GB; using %g (set it to e.g. 4)", COPY_MAX_GB_VAR, raw,
                    DEFAULT_COPY_MAX_GB)
        return DEFAULT_COPY_MAX_GB * 2 ** 30


def model_bytes(model) -> int:
    """Bytes of a module's parameters and buffers (what a deep copy duplicates)."""
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def _identity(source: str) -> tuple:
    from faircalib.models import resolve_source
    from faircalib.models.io import weight_files

    path = resolve_source(source)
    files = [path / "config.json", *weight_files(path)]
    return (str(path), tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files))


def _key(source: str, device: str, dtype: str = "auto") -> tuple:
    from faircalib.devices import resolve_dtype

    return (str(source), str(device), str(resolve_dtype(dtype, device)), _identity(str(source)))


def _insert(key: tuple, loaded) -> None:
    with _LOCK:
        _CACHE[key] = loaded
        while len(_CACHE) > _capacity():
            _CACHE.popitem(last=False)


def load_cached(source: str, device: str = "cpu", dtype: str = "auto"):
    """faircalib.models.load_dllm(source, dtype, device), loaded at most once per process (LRU)."""
    from faircalib.models import load_dllm

    key = _key(source, device, dtype)
    with _LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            STATS["hits"] += 1
            return _CACHE[key]
    loaded = load_dllm(source, dtype=dtype, device=device)
    STATS["loads"] += 1
    _insert(key, loaded)
    return loaded


def load_modifiable(source: str, device: str = "cpu", dtype: str = "auto"):
    """A LoadedDLLM the caller may modify in place (calibration quantizes it): see the module docstring.
    A worker runs one task at a time (Ray's default actor concurrency), so a model taken out of the cache
    has no other user."""
    from faircalib.models import load_dllm

    key, limit = _key(source, device, dtype), _copy_max_bytes()
    with _LOCK:
        cached = _CACHE.get(key)
        if cached is not None and model_bytes(cached.model) <= limit:
            _CACHE.move_to_end(key)
            STATS["hits"] += 1
            return fresh_copy(cached)
        if cached is not None:  # too large to hold twice: hand over the cache's own copy
            del _CACHE[key]
            STATS["taken"] += 1
            return cached
    loaded = load_dllm(source, dtype=dtype, device=device)
    STATS["loads"] += 1
    if model_bytes(loaded.model) > limit:
        return loaded  # not cached: it is about to be modified
    _insert(key, loaded)
    return fresh_copy(loaded)


def fresh_copy(loaded):
    """A LoadedDLLM whose model may be modified (quantized in place) without touching the cache's."""
    import dataclasses

    model = copy.deepcopy(loaded.model)
    return dataclasses.replace(loaded, model=model, adapter=type(loaded.adapter)(model))
