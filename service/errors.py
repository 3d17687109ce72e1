"""The job service's shared error types. Each is a FaircalibError with a one-line user message, so the
CLI prints it as is and the scheduler stores it as a job's reason; the scheduler matches them by type."""
from __future__ import annotations

from faircalib.errors import FaircalibError


class StorageError(FaircalibError):
    """An artifact store (S3 or file://) cannot be reached, written, or read back intact."""


class JobCancelled(FaircalibError):
    """Raised inside a running job when `faircalib cancel` asked it to stop."""


class WorkerError(FaircalibError):
    """A shard failed after its retries (or with a deterministic error); names the shard and cause."""


class PoolCancelled(JobCancelled):
    """The worker pool's `should_stop()` returned True while shards were running."""
