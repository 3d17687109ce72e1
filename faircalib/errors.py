"""Typed exceptions. Each carries a one-line, user-facing message: what went wrong, which input,
and what to do. The CLI prints `str(err)`; services store it as a job's failure reason."""
from __future__ import annotations


class FaircalibError(Exception):
    """Base class for every error faircalib raises on purpose."""


class ModelLoadError(FaircalibError):
    """A model directory, config or checkpoint cannot be loaded."""


class ConfigError(FaircalibError):
    """A configuration value is invalid (names the field and the allowed values)."""


class DataError(FaircalibError):
    """A corpus, dataset or prompt source cannot be read."""


class CalibrationError(FaircalibError):
    """Stage II failed (e.g. a non-finite loss in a named block)."""


class CheckpointError(FaircalibError):
    """A quantized checkpoint is missing files, has a bad checksum, or an unknown format."""
