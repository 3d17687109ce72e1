"""Stage I: probe the FP teacher with random-commit rollouts and build the position prior."""
from faircalib.probe.prior import (DEFAULT_FLOOR, RELIABILITY, SCHEDULES, PositionPrior, PriorAccumulator,
                                   PriorSettings, minmax_over_masked, prior_cache_key, sharpness)

__all__ = ["DEFAULT_FLOOR", "RELIABILITY", "SCHEDULES", "PositionPrior", "PriorAccumulator", "PriorSettings",
           "minmax_over_masked", "prior_cache_key", "sharpness"]
