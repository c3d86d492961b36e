"""Evaluation metrics: alerting precision / recall, calibration, and the slices."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from pumpfleet.features import FeatureSpec, Regimes
from pumpfleet.metrics import (
    brier,
    expected_calibration_error,
    precision_recall,
    regime_labels,
    roc_auc,
    rul_buckets,
    score,
    slice_labels,
    slice_metrics,
)


def test_precision_and_recall_at_the_alert_threshold() -> None:
    prob = np.array([0.9, 0.6, 0.4, 0.2, 0.7])
    label = np.array([1, 0, 1, 0, 1])
    # Alerts at >= 0.6: three raised, two of them real; two of three failures found.
    assert precision_recall(prob, label, 0.6) == (2 / 3, 2 / 3)
    assert precision_recall(prob, label, 0.5) == (2 / 3, 2 / 3)
    assert precision_recall(prob, label, 0.4) == (3 / 4, 1.0)
    # No alert raised: precision undefined; no failure: recall undefined.
    assert precision_recall(prob, label, 0.95) == (None, 0.0)
    assert precision_recall(prob, np.zeros(5), 0.6) == (0.0, None)


def test_brier_and_calibration() -> None:
    assert brier(np.array([1.0, 0.0]), np.array([1, 0])) == 0.0
    assert brier(np.array([0.5, 0.5]), np.array([1, 0])) == 0.25
    # Calibrated: in the 0.2 bin one in five fails, in the 0.8 bin four in five.
    prob = np.array([0.2] * 5 + [0.8] * 5)
    label = np.array([1, 0, 0, 0, 0, 1, 1, 1, 1, 0])
    assert expected_calibration_error(prob, label) == pytest.approx(0.0)
    # Overconfident: says 0.9, right half the time: a gap of 0.4 everywhere.
    assert expected_calibration_error(np.full(4, 0.9), np.array([1, 0, 1, 0])) == pytest.approx(0.4)
    # Share-weighted: a gap of 0.5 on a quarter of the windows, none on the rest.
    prob = np.array([0.05, 0.05, 0.05, 0.5])
    label = np.array([0, 0, 0, 1])
    assert expected_calibration_error(prob, label) == pytest.approx(0.05 * 3 / 4 + 0.5 / 4)
    # p = 1.0 falls into the last bin, not off the end.
    assert expected_calibration_error(np.array([1.0]), np.array([1])) == 0.0
    assert expected_calibration_error(np.array([]), np.array([])) == 0.0


def test_auc_matches_counting_pairs_with_ties() -> None:
    rng = np.random.default_rng(0)
    prob = rng.integers(0, 5, 60) / 4.0  # many ties
    label = rng.integers(0, 2, 60)
    pairs = [(p, q) for p, q in itertools.product(prob[label == 1], prob[label == 0])]
    expected = np.mean([1.0 if p > q else 0.5 if p == q else 0.0 for p, q in pairs])
    assert roc_auc(prob, label) == pytest.approx(expected)


def test_score_has_every_metric() -> None:
    m = score(
        np.array([10.0, 20.0]), np.array([10.0, 30.0]), np.array([0.9, 0.1]), np.array([1, 0])
    )
    assert (m.n, m.rmse, m.mae, m.auc, m.precision, m.recall) == (
        2,
        pytest.approx(np.sqrt(50)),
        5.0,
        1.0,
        1.0,
        1.0,
    )
    assert m.brier == pytest.approx(0.01)
    with pytest.raises(ValueError, match="no windows"):
        score(np.array([]), np.array([]), np.array([]), np.array([]))


def test_rul_buckets_follow_the_horizon_and_the_cap() -> None:
    rul = np.array([0.0, 23.9, 24.0, 24.1, 48.0, 48.1, 167.0, 168.0, 167.99999])
    # (a, b]: a window at exactly the horizon is labelled as failing within it.
    assert rul_buckets(rul, 48, 168).tolist() == [
        "0-24h",
        "0-24h",
        "0-24h",
        "24-48h",
        "24-48h",
        "48-168h",
        "48-168h",
        "cap 168h",
        "cap 168h",  # a float32 round trip of the cap is at the cap
    ]
    assert rul_buckets(np.array([5.0, 15.0, 60.0, 100.0]), 20, 100).tolist() == [
        "0-10h",
        "10-20h",
        "20-100h",
        "cap 100h",
    ]


SPEC = FeatureSpec(
    pump_class="esp",
    channels=["motor_temp", "flow"],
    window=3,
    stride=1,
    interval_seconds=3600,
    rul_cap_hours=100,
    horizon_hours=20,
    mean=[70.0, 100.0],
    std=[5.0, 10.0],
    setting_names=["speed_setpoint"],
    regimes=Regimes(
        settings=["speed_setpoint"],
        center=[[1000.0], [2000.0]],
        scale=[500.0],
        mean=[[70.0, 100.0], [75.0, 110.0]],
        std=[[5.0, 10.0], [5.0, 10.0]],
        rows=[10, 10],
    ),
)


def windows(speeds: list[list[float]]) -> np.ndarray:
    """Raw windows [N, 3, 2 channels + 1 setting] with the given speed per step."""
    raw = np.full((len(speeds), 3, 3), 1.0)
    raw[:, :, 2] = np.asarray(speeds)
    return raw


def test_the_regime_is_the_last_steps() -> None:
    raw = windows([[1000, 1000, 1000], [1000, 1000, 2100], [2000, 2000, 900], [1000, 1, np.nan]])
    assert regime_labels(raw, SPEC).tolist() == ["r0", "r1", "r0", "unknown"]
    flat = SPEC.model_copy(update={"regimes": None})
    assert regime_labels(raw[:, :, :2], flat).tolist() == ["all"] * 4


def test_slices_split_the_windows_and_score_each() -> None:
    raw = windows([[1000] * 3, [2000] * 3, [2000] * 3, [1000] * 3])
    cols = {
        "site": np.array(["a", "b", "a", "a"], dtype=object),
        "rul_hours": np.array([5.0, 15.0, 50.0, 100.0], dtype=np.float32),
    }
    labels = slice_labels(raw, cols, SPEC)
    assert {k: v.tolist() for k, v in labels.items()} == {
        "site": ["a", "b", "a", "a"],
        "regime": ["r0", "r1", "r1", "r0"],
        "rul": ["0-10h", "10-20h", "20-100h", "cap 100h"],
    }
    true = cols["rul_hours"].astype(np.float64)
    pred = true + np.array([1.0, 2.0, 3.0, 4.0])
    fail = (true <= 20).astype(int)
    out = slice_metrics(pred, true, np.full(4, 0.3), fail, labels)
    assert sorted(out) == ["regime", "rul", "site"]
    assert out["site"]["a"].n == 3 and out["site"]["b"].n == 1
    assert out["site"]["b"].mae == 2.0
    assert out["regime"]["r0"].mae == 2.5  # windows 0 and 3
    assert out["rul"]["cap 100h"].rmse == 4.0
    with pytest.raises(ValueError, match="slice 'site' has 2 labels for 4 windows"):
        slice_metrics(pred, true, np.full(4, 0.3), fail, {"site": np.array(["a", "b"])})
