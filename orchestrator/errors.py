"""Typed errors of the job service (store, storage, state machine). Each is a FaircalibError with a
one-line user message, so the CLI prints it as is and the scheduler stores it as a job's reason."""
from __future__ import annotations

from faircalib.errors import FaircalibError


class StoreError(FaircalibError):
    """The job database cannot be opened or migrated, or a job/row does not exist."""


class JobNotFound(StoreError):
    """No job with that id (or unique prefix)."""


class InvalidTransition(StoreError):
    """A state change that the transition table does not allow (e.g. leaving a terminal state)."""


class TransitionConflict(StoreError):
    """A compare-and-set transition lost: the job was no longer in the expected state/attempt."""


class StorageError(FaircalibError):
    """An artifact store (S3 or file://) cannot be reached, written, or read back intact."""


class JobCancelled(FaircalibError):
    """Raised inside a running job when `faircalib cancel` asked it to stop."""
