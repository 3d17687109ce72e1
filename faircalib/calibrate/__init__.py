"""Stage II: streaming layer-wise calibration with a position-weighted hidden-state MSE
(docs/method.md §3), and `quantize`, the entry point for every method."""
from faircalib.calibrate.api import quantize
from faircalib.calibrate.config import NAN_POLICIES, CalibConfig
from faircalib.calibrate.engine import (
                                        BlockReport,
                                        CalibrationResult,
                                        ProgressFn,
                                        calibrate_layerwise,
                                        weighted_mse,
)

__all__ = ["NAN_POLICIES", "BlockReport", "CalibConfig", "CalibrationResult", "ProgressFn", "calibrate_layerwise",
           "quantize", "weighted_mse"]
