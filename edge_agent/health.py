"""The anomaly (health) model on the device: one variant of the bundle's anomaly ONNX,
scored by the one scoring path (:func:`pumpfleet.scoring.score_health`, the code the Serve
replicas use), so that a window gets the same score on the device as in the cloud.

Numpy and the core's features, health and scoring modules only; the onnxruntime session
is made by :mod:`edge_agent.model`, like the RUL model's.
"""

from __future__ import annotations

import logging

import numpy as np

from pumpfleet.errors import BundleError
from pumpfleet.features import FeatureSpec, window_features
from pumpfleet.health import HealthSpec, score_diff
from pumpfleet.manifest import AnomalyEntry
from pumpfleet.runtime import Runner
from pumpfleet.scoring import HealthModel, HealthScores, anomaly_errors, score_health

log = logging.getLogger(__name__)

FP32, INT8 = "fp32", "int8"
# On a GPU, FP32 runs in TF32 (about 1e-3 relative on the reconstruction): the golden
# tolerance on health scores there is at least this.
GPU_HEALTH_ATOL = 0.02


def anomaly_variant(info: AnomalyEntry | None, rul_precision: str) -> str:
    """The anomaly variant to run beside a RUL variant of ``rul_precision``: INT8 where
    the RUL model runs INT8 (this device chose speed) and the INT8 anomaly model was
    within its limits at export; FP32 otherwise."""
    int8 = info.variants.get(INT8) if info is not None else None
    return INT8 if rul_precision == INT8 and int8 is not None and int8.within_accuracy else FP32


class HealthScorer:
    """One variant of a bundle's anomaly model, with its feature spec and health spec."""

    def __init__(
        self,
        info: AnomalyEntry,
        members: dict[str, bytes],
        variant: str,
        run: Runner,
        golden_errors: np.ndarray | None,
        on_gpu: bool = False,
    ) -> None:
        if variant not in info.variants:
            raise BundleError(f"the anomaly model has no variant {variant!r}")
        self.info = info
        self.variant = variant
        self.version = info.version
        self.spec = FeatureSpec.from_json(members[info.feature_spec_file])
        self.health = HealthSpec.from_json(members[info.health_file])
        self.model = HealthModel(self.version, self.spec, self.health, run)
        self.golden_errors = golden_errors
        self.golden_atol = info.variants[variant].golden_atol
        if on_gpu:
            self.golden_atol = max(self.golden_atol, GPU_HEALTH_ATOL)

    def errors(self, raw: np.ndarray) -> np.ndarray:
        """Each raw window's error ``[N]`` (float64; NaN where not finite)."""
        return anomaly_errors(self.model.run, window_features(raw, self.spec))

    def score(self, raw: np.ndarray) -> HealthScores:
        """Health scores and flags of raw windows ``[N, W, C + S]``."""
        return score_health(raw, self.model)

    def self_test(self, golden_raw: np.ndarray) -> tuple[bool, str]:
        """The golden windows' health scores must be those of the FP32 model at export,
        within this variant's tolerance (relative above a score of 1)."""
        if self.golden_errors is None:
            return False, "the bundle has no golden errors for its anomaly model"
        try:
            got = self.errors(golden_raw)
        except Exception as e:  # a model that cannot run fails its test
            return False, f"anomaly model on the golden windows failed: {e}"
        if got.shape != self.golden_errors.shape or not np.isfinite(got).all():
            return False, f"golden anomaly errors are {got.shape} / not finite"
        diff = float(
            score_diff(self.health.score(got), self.health.score(self.golden_errors)).max()
        )
        if diff > self.golden_atol:
            return False, (
                f"golden health scores differ by {diff:.2e} (limit {self.golden_atol:.1e})"
            )
        return True, f"health scores ({self.variant}) match to {diff:.1e}"


def health_or_none(model: HealthScorer | None, raw: np.ndarray, version: int) -> HealthScores:
    """``model``'s health of raw windows; none scored where the bundle (v``version``) has
    no anomaly model, or where that model raises: the agent goes on with the RUL outputs,
    and the windows count against the bundle's probation."""
    if model is None:
        return HealthScores.none(len(raw))
    try:
        return model.score(raw)
    except Exception as e:  # onnxruntime's errors have no common base but Exception
        log.warning("v%d anomaly model failed on %d windows: %s", version, len(raw), e)
        return HealthScores.none(len(raw))
