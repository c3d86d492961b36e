"""The anomaly (health) model on the device: each window's error from the bundle's anomaly
ONNX, made into a health score and a flag by :class:`pumpfleet.health.HealthSpec`, the
code the Serve replicas use, so that a window gets the same score on the device as in the
cloud.

Numpy and the core's features and health modules only; the onnxruntime session is made
by :mod:`edge_agent.model`, like the RUL model's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from pumpfleet.errors import BundleError
from pumpfleet.features import FeatureSpec, window_features
from pumpfleet.health import HealthSpec, score_diff

log = logging.getLogger(__name__)

FP32, INT8 = "fp32", "int8"
INPUT, OUTPUT = "window", "scores"
# On a GPU, FP32 runs in TF32 (about 1e-3 relative on the reconstruction): the golden
# tolerance on health scores there is at least this.
GPU_HEALTH_ATOL = 0.02


def anomaly_variant(info: dict[str, Any] | None, rul_precision: str) -> str:
    """The anomaly variant to run beside a RUL variant of ``rul_precision``: INT8 where
    the RUL model runs INT8 (this device chose speed) and the INT8 anomaly model was
    within its limits at export; FP32 otherwise."""
    found = (info or {}).get("variants", {})
    if rul_precision == INT8 and found.get(INT8, {}).get("within_accuracy") is True:
        return INT8
    return FP32


@dataclass(frozen=True)
class Health:
    """Health of a batch of windows: scores (NaN where the model gave no finite error),
    flags (False there) and which windows were scored."""

    scores: np.ndarray
    flags: np.ndarray
    ok: np.ndarray


class HealthScorer:
    """One variant of a bundle's anomaly model, with its feature spec and health spec."""

    def __init__(
        self,
        info: dict[str, Any],
        members: dict[str, bytes],
        variant: str,
        session: Any,
        golden_errors: np.ndarray | None,
        on_gpu: bool = False,
    ) -> None:
        variants = info.get("variants", {})
        if variant not in variants:
            raise BundleError(f"the anomaly model has no variant {variant!r}")
        self.info = info
        self.variant = variant
        self.version = str(info["version"])
        self.spec = FeatureSpec.from_json(members[info["feature_spec_file"]])
        self.health = HealthSpec.from_json(members[info["health_file"]])
        self.session = session
        self.golden_errors = golden_errors
        self.golden_atol = float(variants[variant].get("golden_atol", 1e-4))
        if on_gpu:
            self.golden_atol = max(self.golden_atol, GPU_HEALTH_ATOL)

    def errors(self, raw: np.ndarray) -> np.ndarray:
        """Each raw window's error ``[N]`` (float64; NaN where not finite)."""
        return self.model_errors(window_features(raw, self.spec))

    def model_errors(self, features: np.ndarray) -> np.ndarray:
        """The model's error ``[N]`` for feature windows already made with its spec."""
        x = np.ascontiguousarray(features, dtype=np.float32)
        if len(x) == 0:
            return np.zeros(0)
        out = np.asarray(self.session.run([OUTPUT], {INPUT: x})[0], dtype=np.float64)
        if out.shape != (len(x), 1):
            raise BundleError(f"the anomaly model gave {out.shape}, not ({len(x)}, 1)")
        e = out[:, 0]
        return np.where(np.isfinite(e), e, np.nan)

    def score(self, raw: np.ndarray) -> Health:
        """Health scores and flags of raw windows ``[N, W, C + S]``."""
        e = self.errors(raw)
        ok = np.isfinite(e)
        return Health(scores=self.health.score(e), flags=self.health.flag(e) & ok, ok=ok)

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


def score_health(model: HealthScorer | None, raw: np.ndarray, version: int) -> Health:
    """``model``'s health of raw windows; none scored where the bundle (v``version``) has
    no anomaly model, or where that model raises: the agent goes on with the RUL outputs,
    and the windows count against the bundle's probation."""
    n = len(raw)
    none = Health(np.full(n, np.nan), np.zeros(n, dtype=bool), np.zeros(n, dtype=bool))
    if model is None:
        return none
    try:
        return model.score(raw)
    except Exception as e:  # onnxruntime's errors have no common base but Exception
        log.warning("v%d anomaly model failed on %d windows: %s", version, n, e)
        return none
