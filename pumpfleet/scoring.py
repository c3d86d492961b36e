"""The one scoring path: raw windows → features → model → decoded RUL and failure
probability, alert, and the health score and anomaly flag of a class's health model.

Training's evaluation, the Serve replicas, the export's variant checks and the edge agent
all score through these functions, with any :data:`pumpfleet.runtime.Runner` (an
onnxruntime session, a TensorRT engine). numpy and the core's feature and health modules
only: the device imports it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pumpfleet.errors import InputError
from pumpfleet.features import FeatureSpec, decode_outputs, window_features
from pumpfleet.health import HealthSpec
from pumpfleet.runtime import Runner


@dataclass(frozen=True)
class RulScores:
    """A RUL model's answer for N windows. ``ok`` is False where the model's outputs were
    not finite; there RUL and probability are 0 and no alert is raised."""

    rul_hours: np.ndarray
    failure_probability: np.ndarray
    alert: np.ndarray
    ok: np.ndarray
    features: np.ndarray  # the model's input, reused by a health model with the same spec
    outputs: np.ndarray  # the model's own outputs [N, 2], what golden windows compare


@dataclass(frozen=True)
class HealthModel:
    """A class's health (anomaly) model: its feature spec, how its error becomes a score,
    and the model."""

    version: str
    spec: FeatureSpec
    health: HealthSpec
    run: Runner

    def reads(self, spec: FeatureSpec) -> bool:
        """Whether it reads the same raw windows (inputs and length) as a model of ``spec``."""
        return list(spec.inputs) == list(self.spec.inputs) and spec.window == self.spec.window


@dataclass(frozen=True)
class HealthScores:
    """Health of N windows: scores (NaN where the model gave no finite error), flags
    (False there) and which windows were scored."""

    scores: np.ndarray
    flags: np.ndarray
    ok: np.ndarray

    @classmethod
    def none(cls, n: int) -> HealthScores:
        """No window scored."""
        return cls(np.full(n, np.nan), np.zeros(n, dtype=bool), np.zeros(n, dtype=bool))


def model_outputs(run: Runner, x: np.ndarray, width: int) -> np.ndarray:
    """``run`` on feature windows ``x``, its outputs checked to be ``[N, width]``."""
    if len(x) == 0:
        return np.zeros((0, width), dtype=np.float64)
    out = np.asarray(run(np.ascontiguousarray(x, dtype=np.float32)), dtype=np.float64)
    if out.shape != (len(x), width):
        raise InputError(f"the model gave outputs {out.shape}, not ({len(x)}, {width})")
    return out


def score_rul(
    raw: np.ndarray, spec: FeatureSpec, run: Runner, threshold: float | None = None
) -> RulScores:
    """Score raw windows ``[N, W, C + S]`` with a RUL model; an alert where the failure
    probability reaches ``threshold`` (the spec's own by default)."""
    return score_features(window_features(raw, spec), spec, run, threshold)


def score_features(
    x: np.ndarray, spec: FeatureSpec, run: Runner, threshold: float | None = None
) -> RulScores:
    """:func:`score_rul` of windows whose features ``x`` were already made with ``spec``."""
    out = model_outputs(run, x, 2)
    ok = np.isfinite(out).all(axis=1)
    rul, prob = decode_outputs(np.where(ok[:, None], out, 0.0), spec)
    limit = spec.alert_threshold if threshold is None else threshold
    return RulScores(rul, prob, ok & (prob >= limit), ok, x, out)


def anomaly_errors(run: Runner, x: np.ndarray) -> np.ndarray:
    """An anomaly model's error ``[N]`` for its feature windows (NaN where not finite)."""
    e = model_outputs(run, x, 1)[:, 0]
    return np.where(np.isfinite(e), e, np.nan)


def score_health(
    raw: np.ndarray,
    model: HealthModel,
    spec: FeatureSpec | None = None,
    features: np.ndarray | None = None,
) -> HealthScores:
    """Health scores and flags of raw windows; ``features`` made with ``spec`` are reused
    where the health model standardises the same way."""
    reuse = features is not None and spec is not None and spec == model.spec
    x = features if reuse and features is not None else window_features(raw, model.spec)
    e = anomaly_errors(model.run, x)
    ok = np.isfinite(e)
    return HealthScores(model.health.score(e), model.health.flag(e) & ok, ok)


@dataclass(frozen=True)
class Scores:
    """A class's full answer for N windows: the RUL model's, and its health model's where
    one reads these windows (``health`` None otherwise)."""

    rul: RulScores
    health: HealthScores | None


def score_windows(
    raw: np.ndarray,
    spec: FeatureSpec,
    run: Runner,
    health: HealthModel | None = None,
    threshold: float | None = None,
) -> Scores:
    """The one scoring path (see the module's docstring)."""
    rul = score_rul(raw, spec, run, threshold)
    if health is None or not health.reads(spec):
        return Scores(rul, None)
    return Scores(rul, score_health(raw, health, spec, rul.features))
