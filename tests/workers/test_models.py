"""The worker's model cache (workers/models.py): calibration's modifiable model is a deep copy of a small
cached model (the cache stays warm and unmodified), and a model above FAIRCALIB_WORKER_COPY_MAX_GB is taken
out of the cache (or loaded without caching) so a process never holds it twice."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture()
def cache(monkeypatch):
    from faircalib.workers import models

    monkeypatch.setattr(models, "_CACHE", type(models._CACHE)())
    monkeypatch.setattr(models, "STATS", {"loads": 0, "hits": 0, "taken": 0})
    return models


def _first_weight(loaded) -> torch.Tensor:
    return next(loaded.model.parameters())


def test_small_model_is_copied_and_the_cache_stays_warm(cache, tiny_model_dir, monkeypatch):
    monkeypatch.setenv(cache.COPY_MAX_GB_VAR, "1")
    src = str(tiny_model_dir)
    shared = cache.load_cached(src)
    mine = cache.load_modifiable(src)
    assert mine.model is not shared.model and cache.STATS == {"loads": 1, "hits": 1, "taken": 0}
    before = _first_weight(shared).clone()
    with torch.no_grad():
        _first_weight(mine).add_(1.0)  # what in-place quantization does to it
    assert torch.equal(_first_weight(shared), before)  # the cache's model is untouched
    assert cache.load_cached(src) is shared  # and still cached
    assert 0 < cache.model_bytes(shared.model) < 2 ** 30


def test_model_above_the_copy_limit_is_taken_not_copied(cache, tiny_model_dir, monkeypatch):
    monkeypatch.setenv(cache.COPY_MAX_GB_VAR, "0")  # every model counts as too large to hold twice
    src = str(tiny_model_dir)
    shared = cache.load_cached(src)
    mine = cache.load_modifiable(src)
    assert mine is shared and cache.STATS == {"loads": 1, "hits": 0, "taken": 1}
    again = cache.load_cached(src)  # the next stage loads it again: the taken model may be quantized
    assert again is not mine and cache.STATS["loads"] == 2
    fresh = cache.load_modifiable(str(tiny_model_dir))  # cached again, so taken again
    assert fresh is again and cache.STATS["taken"] == 2
    loose = cache.load_modifiable(src)  # nothing cached: loaded, and not cached since it will be modified
    assert cache.STATS["loads"] == 3 and cache._CACHE == {} and loose is not fresh


def test_copy_limit_from_the_environment(cache, monkeypatch, caplog):
    monkeypatch.setenv(cache.COPY_MAX_GB_VAR, "0.5")
    assert cache._copy_max_bytes() == 0.5 * 2 ** 30
    monkeypatch.setenv(cache.COPY_MAX_GB_VAR, "lots")
    assert cache._copy_max_bytes() == cache.DEFAULT_COPY_MAX_GB * 2 ** 30
    assert "FAIRCALIB_WORKER_COPY_MAX_GB='lots' is not a number of GB; using 2" in caplog.text
    monkeypatch.delenv(cache.COPY_MAX_GB_VAR)
    assert cache._copy_max_bytes() == 2 * 2 ** 30


def test_the_cache_is_keyed_by_dtype(cache, tiny_model_dir):
    src = str(tiny_model_dir)  # stored float32
    stored = cache.load_cached(src)
    assert cache.load_cached(src, "cpu", "auto") is stored
    half = cache.load_cached(src, "cpu", "bfloat16")
    assert half is not stored and half.model.dtype == torch.bfloat16 and stored.model.dtype == torch.float32
    assert cache.STATS["loads"] == 2
    mine = cache.load_modifiable(src, "cpu", "bfloat16")  # calibration's copy in the job's dtype
    assert mine.model.dtype == torch.bfloat16 and mine.model is not half.model
