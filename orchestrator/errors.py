"""Typed errors of the job store and its state machine. Each is a FaircalibError with a one-line user
message. The errors the orchestrator shares with the workers (storage, cancellation, worker failures)
are faircalib.service.errors."""
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
