"""Offline A/B, the measuring half: challenger and champion scored on the same holdout
of a feature snapshot, per class and per slice (site, operating regime, RUL bucket), with
each model's single-window latency, ONNX size and recorded ONNX parity, beside the trivial
baseline. The verdict is the pure ``pumpfleet.promotion.decide_promotion``; the job that
records and acts on it is ``pumpfleet.evaluation_run``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from pumpfleet import runtime
from pumpfleet.errors import DataError
from pumpfleet.metrics import Metrics, score, slice_labels, slice_metrics
from pumpfleet.promotion import Decision, ModelReport, PromotionPolicy, decide_promotion
from pumpfleet.registry import LoadedModel, Registry
from pumpfleet.scoring import RulScores, score_rul
from pumpfleet.snapshot import Snapshot

PARITY_TAG = "onnx_parity_max_abs"
PARITY_ATOL_TAG = "onnx_parity_atol"
LATENCY_RUNS = 300
LATENCY_WARMUP = 20


@dataclass(frozen=True)
class Holdout:
    """One class's holdout labels and each window's slices, read once with the
    snapshot's own spec, so that every model is scored on the same windows and slices."""

    pump_class: str
    rul: np.ndarray
    failure: np.ndarray
    slices: dict[str, np.ndarray]


def load_holdout(snap: Snapshot, cls: str) -> Holdout:
    raw, cols = snap.load(cls, "holdout")
    if len(raw) == 0:
        raise DataError(f"{cls}: the holdout of snapshot {snap.id} is empty")
    return Holdout(
        cls,
        cols["rul_hours"],
        cols["failure_within_horizon"],
        slice_labels(raw, cols, snap.spec(cls)),
    )


def p50_latency_ms(sess: Any, window: np.ndarray, runs: int = LATENCY_RUNS) -> float:
    """Median onnxruntime latency of scoring one window, as the edge and Serve do."""
    x = np.ascontiguousarray(window[None], dtype=np.float32)
    for _ in range(LATENCY_WARMUP):
        runtime.run(sess, x)
    times = np.empty(runs)
    for i in range(runs):
        t0 = time.perf_counter_ns()
        runtime.run(sess, x)
        times[i] = time.perf_counter_ns() - t0
    return float(np.median(times)) / 1e6


def recorded_parity(registry: Registry, model: LoadedModel, tag: str = PARITY_TAG) -> float | None:
    """The torch / ONNX max abs difference measured when the version was registered (or,
    with ``tag=PARITY_ATOL_TAG``, its kind's limit): a version tag, or (older versions) a
    tag of its training run."""
    value = model.tags.get(tag) or registry.run_tags(model.run_id).get(tag)
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _predict(model: LoadedModel, raw: np.ndarray) -> tuple[Any, RulScores]:
    """Score raw windows of the model's inputs by the one scoring path: (session, scores)."""
    sess = runtime.session(model.onnx)
    return sess, score_rul(raw, model.spec, runtime.runner(sess))


def model_report(
    registry: Registry, model: LoadedModel, snap: Snapshot, hold: Holdout
) -> ModelReport:
    """A registered model on a class's holdout, through onnxruntime: overall and per
    slice, with its single-window latency, ONNX size and recorded parity."""
    raw, _ = snap.load(hold.pump_class, "holdout", model.spec)
    sess, scored = _predict(model, raw)
    rul, prob, x = scored.rul_hours, scored.failure_probability, scored.features
    if len(rul) != len(hold.rul):
        raise DataError(f"{hold.pump_class}: v{model.version} scored {len(rul)} windows")
    th = model.spec.alert_threshold
    overall = score(rul, hold.rul, prob, hold.failure, th)
    return ModelReport(
        **overall.model_dump(),
        version=model.version,
        slices=slice_metrics(rul, hold.rul, prob, hold.failure, hold.slices, th),
        latency_p50_ms=p50_latency_ms(sess, x[0]),
        size_bytes=len(model.onnx),
        onnx_parity_max_abs=recorded_parity(registry, model),
        onnx_parity_atol=recorded_parity(registry, model, PARITY_ATOL_TAG),
    )


def split_metrics(model: LoadedModel, snap: Snapshot, cls: str, split: str) -> Metrics | None:
    """A model's overall metrics on another split (None if it is empty)."""
    raw, cols = snap.load(cls, split, model.spec)
    if len(raw) == 0:
        return None
    s = _predict(model, raw)[1]
    return score(
        s.rul_hours,
        cols["rul_hours"],
        s.failure_probability,
        cols["failure_within_horizon"],
        model.spec.alert_threshold,
    )


def baseline_metrics(snap: Snapshot, hold: Holdout) -> Metrics:
    """The trivial model: the training mean RUL and failure rate, for every window."""
    train = snap.load(hold.pump_class, "train")[1]
    n = len(hold.rul)
    rul = np.full(n, float(np.mean(train["rul_hours"])))
    prob = np.full(n, float(np.mean(train["failure_within_horizon"])))
    return score(rul, hold.rul, prob, hold.failure)


@dataclass
class Comparison:
    challenger: ModelReport
    champion: ModelReport | None
    baseline: Metrics
    decision: Decision


def compare(
    registry: Registry,
    snap: Snapshot,
    cls: str,
    candidate: LoadedModel,
    champion: LoadedModel | None,
    policy: PromotionPolicy,
) -> Comparison:
    hold = load_holdout(snap, cls)
    ch = model_report(registry, candidate, snap, hold)
    champ = model_report(registry, champion, snap, hold) if champion is not None else None
    base = baseline_metrics(snap, hold)
    return Comparison(ch, champ, base, decide_promotion(ch, champ, base, policy))
