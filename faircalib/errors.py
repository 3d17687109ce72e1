"""Typed exceptions. Each carries a one-line, user-facing message: what went wrong, which input,
and what to do. The CLI prints `str(err)`; services store it as a job's failure reason."""
from __future__ import annotations


class FaircalibError(Exception):
    """Base class for every error faircalib raises on purpose."""


class ModelLoadError(FaircalibError):
    """A model directory, config or checkpoint cannot be loaded."""


class ConfigError(FaircalibError):
    """A configuration value is invalid (names the field and the allowed values).

    `field` is the dotted path of the offending field when known (the message then starts with
    "FIELD: "); `within(prefix)` re-roots it under an enclosing section (e.g. "probe" -> "probe.steps"),
    so an error raised deep inside a library config reads the same as the job file's field path."""

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.field = field

    def within(self, prefix: str) -> ConfigError:
        if not prefix:
            return self
        text = str(self)
        if self.field and text.startswith(self.field):
            return ConfigError(f"{prefix}.{text}", field=f"{prefix}.{self.field}")
        return ConfigError(f"{prefix}: {text}", field=prefix)


class DataError(FaircalibError):
    """A corpus, dataset or prompt source cannot be read."""


class CalibrationError(FaircalibError):
    """Stage II failed (e.g. a non-finite loss in a named block)."""


class CheckpointError(FaircalibError):
    """A quantized checkpoint is missing files, has a bad checksum, or an unknown format."""


class NonFiniteError(FaircalibError):
    """A tensor or metric at a stage boundary holds NaN or inf (names the first one and the stage)."""
