"""Stage II: streaming layer-wise calibration with a position-weighted hidden-state MSE (SPEC.md §3)."""
from faircalib.calibrate.engine import (
                                        BlockReport,
                                        CalibrationResult,
                                        ProgressFn,
                                        calibrate_layerwise,
                                        weighted_mse,
)

__all__ = ["BlockReport", "CalibrationResult", "ProgressFn", "calibrate_layerwise", "weighted_mse"]
