"""Stage I: probe the FP teacher with random-commit rollouts and build the position prior.

    from faircalib.probe import ProbeConfig, probe_prior, probe_shard, PositionPrior
"""
from faircalib.probe.prior import (
                                   DEFAULT_FLOOR,
                                   RELIABILITY,
                                   SCHEDULES,
                                   PositionPrior,
                                   PriorAccumulator,
                                   PriorSettings,
                                   minmax_over_masked,
                                   prior_cache_key,
                                   sharpness,
)
from faircalib.probe.rollout import (
                                   PAPER_SCALE,
                                   ProbeConfig,
                                   batch_seed,
                                   probe_cache_key,
                                   probe_data_hash,
                                   probe_defaults,
                                   probe_meta,
                                   probe_prior,
                                   probe_priors,
                                   probe_shard,
)

__all__ = ["DEFAULT_FLOOR", "PAPER_SCALE", "RELIABILITY", "SCHEDULES", "PositionPrior", "PriorAccumulator",
           "PriorSettings", "ProbeConfig", "batch_seed", "minmax_over_masked", "prior_cache_key", "probe_cache_key",
           "probe_data_hash", "probe_defaults", "probe_meta", "probe_prior", "probe_priors", "probe_shard", "sharpness"]
