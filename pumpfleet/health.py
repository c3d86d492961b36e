"""Health scores and anomaly flags from an anomaly model's per-window error: numpy and
pydantic only, so the Serve replicas and the edge agent can turn the same model output
into the same score and flag with this one module.

An anomaly model (:mod:`pumpfleet.anomaly`) maps a window to one non-negative *error*:
the conv-AE's mean squared reconstruction error, or the PCA baseline's combined T²+Q
statistic. :class:`HealthSpec` holds how that error becomes a health score, calibrated on
held-out windows of normal operation:

- ``error_median``: the median error of the calibration windows (health score 0);
- ``far_levels`` / ``error_quantiles``: the error that ``far_levels[i]`` of the
  calibration windows exceed, for a few levels, so that the false-alarm rate can be
  retuned later without the data (:meth:`HealthSpec.with_target_far`);
- ``target_far`` and ``margin``: the alarm threshold is the calibration error at
  ``target_far``, times ``margin`` (1: exactly the calibrated rate; above 1 where normal
  operation in service wanders further than the calibration data did);
- the health score is ``(error - error_median) / (threshold - error_median)``: 0 for a
  typical normal window, 1 at the alarm threshold; a window is anomalous when its score
  exceeds 1.
"""

from __future__ import annotations

import json
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field, model_validator

from pumpfleet.errors import DataError

HEALTH_FILE = "health_spec.json"
# The false-alarm rates whose calibration errors a spec keeps (retunable between them).
FAR_LEVELS = (0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001)
MIN_CALIBRATION = 20  # windows: fewer cannot place a threshold at all


class HealthSpec(BaseModel):
    """How an anomaly model's per-window error becomes a health score and a flag."""

    model_kind: Literal["conv_ae", "pca"]
    target_far: float = Field(gt=0, lt=1)
    margin: float = Field(default=1.0, gt=0)
    error_median: float = Field(ge=0)
    # Calibration errors at each false-alarm level (largest level first, errors
    # non-decreasing); levels below 1 / calibration_windows are not kept.
    far_levels: list[float] = Field(min_length=1)
    error_quantiles: list[float] = Field(min_length=1)
    calibration_windows: int = Field(ge=MIN_CALIBRATION)
    # The false-alarm rate the threshold gives on the calibration windows themselves.
    calibration_far: float = Field(ge=0, le=1)
    version: int = 1

    @model_validator(mode="after")
    def _consistent(self) -> HealthSpec:
        if len(self.far_levels) != len(self.error_quantiles):
            raise ValueError("far_levels and error_quantiles need the same length")
        if any(b >= a for a, b in zip(self.far_levels, self.far_levels[1:], strict=False)):
            raise ValueError("far_levels must decrease")
        if any(b < a for a, b in zip(self.error_quantiles, self.error_quantiles[1:], strict=False)):
            raise ValueError("error_quantiles must not decrease")
        if not self.far_levels[-1] <= self.target_far <= self.far_levels[0]:
            raise ValueError(
                f"target_far {self.target_far} is outside the calibrated range "
                f"{self.far_levels[-1]}..{self.far_levels[0]}"
            )
        return self

    @property
    def threshold(self) -> float:
        """The error above which a window is anomalous."""
        # Interpolated in log(rate): quantiles of a tail are close to linear there.
        logs = np.log(np.asarray(self.far_levels))
        at = float(np.interp(np.log(self.target_far), logs[::-1], self.error_quantiles[::-1]))
        # A threshold at the median would make every score infinite: keep it above.
        return max(at * self.margin, self.error_median * (1 + 1e-6) + 1e-12)

    def score(self, error: np.ndarray) -> np.ndarray:
        """Health score of each window's error: 0 typical, 1 at the alarm threshold."""
        e = np.asarray(error, dtype=np.float64).reshape(-1)
        return (e - self.error_median) / (self.threshold - self.error_median)

    def flag(self, error: np.ndarray) -> np.ndarray:
        """Whether each window is anomalous (its health score exceeds 1)."""
        return np.asarray(error, dtype=np.float64).reshape(-1) > self.threshold

    def with_target_far(self, target_far: float, margin: float | None = None) -> HealthSpec:
        """The same calibration with another false-alarm target (and margin)."""
        update: dict[str, float] = {"target_far": target_far}
        if margin is not None:
            update["margin"] = margin
        return HealthSpec.model_validate({**self.model_dump(), **update})

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    @classmethod
    def from_json(cls, text: str | bytes) -> HealthSpec:
        return cls.model_validate(json.loads(text))


def score_diff(got: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Differences of health scores from reference scores, relative where the reference is
    above 1 (far past the threshold, 10 and 10.1 say the same about a pump)."""
    a = np.asarray(got, dtype=np.float64).reshape(-1)
    b = np.asarray(ref, dtype=np.float64).reshape(-1)
    return np.abs(a - b) / np.maximum(1.0, np.abs(b))


def calibrate(
    errors: np.ndarray,
    model_kind: Literal["conv_ae", "pca"],
    target_far: float = 0.01,
    margin: float = 1.0,
) -> HealthSpec:
    """A health spec from the errors of held-out windows of normal operation."""
    e = np.asarray(errors, dtype=np.float64).reshape(-1)
    e = e[np.isfinite(e)]
    if len(e) < MIN_CALIBRATION:
        raise DataError(
            f"{len(e)} calibration windows: at least {MIN_CALIBRATION} of normal operation needed"
        )
    levels = [f for f in FAR_LEVELS if f >= 1.0 / len(e)]
    if not levels:  # pragma: no cover - MIN_CALIBRATION keeps the 0.2 level
        levels = [FAR_LEVELS[0]]
    quantiles = np.maximum.accumulate([float(np.quantile(e, 1 - f)) for f in levels])
    low = levels[-1]
    if target_far < low:
        raise DataError(
            f"{len(e)} calibration windows cannot place a false-alarm rate of {target_far}; "
            f"the lowest is {low} (calibrate on more normal windows)"
        )
    spec = HealthSpec(
        model_kind=model_kind,
        target_far=target_far,
        margin=margin,
        error_median=float(np.median(e)),
        far_levels=levels,
        error_quantiles=[float(q) for q in quantiles],
        calibration_windows=len(e),
        calibration_far=0.0,
    )
    return spec.model_copy(update={"calibration_far": float(spec.flag(e).mean())})


def detection_report(flags: np.ndarray, labels: np.ndarray) -> dict[str, float | None]:
    """Precision, recall, F1, false-alarm rate and missed-alarm rate (both in %) of
    per-row flags against 0/1 labels (None where undefined)."""
    p = np.asarray(flags, dtype=bool).reshape(-1)
    y = np.asarray(labels, dtype=bool).reshape(-1)
    tp, fp = int((p & y).sum()), int((p & ~y).sum())
    fn, tn = int((~p & y).sum()), int((~p & ~y).sum())
    return {
        "precision": tp / (tp + fp) if tp + fp else None,
        "recall": tp / (tp + fn) if tp + fn else None,
        "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None,
        "far": 100.0 * fp / (fp + tn) if fp + tn else None,
        "mar": 100.0 * fn / (fn + tp) if fn + tp else None,
        "rows": float(len(p)),
        "positives": float(tp + fn),
    }


class AnomalyGate(BaseModel):
    """What an anomaly model must reach on labelled faults to be registered."""

    min_precision: float = Field(default=0.5, ge=0, le=1)
    min_recall: float = Field(default=0.5, ge=0, le=1)
    # Without labelled faults there is nothing to gate on: pass (True) or refuse.
    pass_without_labels: bool = True


def gate_anomaly(report: dict[str, float | None] | None, gate: AnomalyGate) -> tuple[bool, str]:
    """Whether a model with this :func:`detection_report` on labelled faults (None: no
    labelled faults exist) passes ``gate``, and why."""
    if report is None or not report.get("positives"):
        return gate.pass_without_labels, "no labelled faults to gate on"
    precision = report.get("precision") or 0.0
    recall = report.get("recall") or 0.0
    if precision < gate.min_precision:
        return False, f"precision {precision:.3f} below {gate.min_precision}"
    if recall < gate.min_recall:
        return False, f"recall {recall:.3f} below {gate.min_recall}"
    return True, f"precision {precision:.3f}, recall {recall:.3f}"
