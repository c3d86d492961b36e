"""The pure decisions: promotion, A/B arm assignment, drift verdict; and metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pumpfleet.drift import drift_verdict
from pumpfleet.metrics import mae, phm08_score, regression_report, rmse, roc_auc
from pumpfleet.promotion import PromotionPolicy, decide_promotion
from pumpfleet.routing import Arm, assign_arm, bucket

BASE = {"rmse": 40.0}


def test_first_model_must_beat_baseline() -> None:
    policy = PromotionPolicy(min_gain_over_baseline=0.1)
    assert decide_promotion({"rmse": 20.0}, None, BASE, policy).promote
    d = decide_promotion({"rmse": 37.0}, None, BASE, policy)
    assert not d.promote and "does not beat baseline 40.000" in d.reason


def test_challenger_must_beat_champion_by_the_margin() -> None:
    policy = PromotionPolicy(min_gain_over_champion=0.05)
    assert decide_promotion({"rmse": 18.0}, {"rmse": 20.0}, BASE, policy).promote
    assert not decide_promotion({"rmse": 19.5}, {"rmse": 20.0}, BASE, policy).promote
    assert not decide_promotion({"rmse": 20.0}, {"rmse": 20.0}, BASE, PromotionPolicy()).promote


def test_missing_metric_is_an_error() -> None:
    with pytest.raises(ValueError, match="challenger report has no 'rmse'"):
        decide_promotion({"mae": 1.0}, None, BASE, PromotionPolicy())


def test_arms_are_sticky_and_follow_the_weight() -> None:
    pumps = [f"esp-{i:05d}" for i in range(4000)]
    arms = [assign_arm(p, 0.3) for p in pumps]
    assert arms == [assign_arm(p, 0.3) for p in pumps]
    share = arms.count(Arm.CHALLENGER) / len(pumps)
    assert 0.27 < share < 0.33
    assert {assign_arm(p, 0.0) for p in pumps} == {Arm.CHAMPION}
    assert {assign_arm(p, 1.0) for p in pumps} == {Arm.CHALLENGER}
    # Raising the weight only moves champion pumps over, never back.
    for p, a in zip(pumps, arms, strict=True):
        if a == Arm.CHALLENGER:
            assert assign_arm(p, 0.5) == Arm.CHALLENGER
    assert bucket("esp-1", "a") != bucket("esp-1", "b")
    with pytest.raises(ValueError, match=r"challenger_weight must be in \[0, 1\]"):
        assign_arm("esp-1", 1.5)


def test_drift_verdict_needs_enough_chunks() -> None:
    assert drift_verdict({"a": 3, "b": 1, "c": 0}, 2) == ["a"]
    assert drift_verdict({"a": 3, "b": 1}, 1) == ["a", "b"]


def test_metrics() -> None:
    assert rmse(np.array([1.0, 3.0]), np.array([2.0, 2.0])) == 1.0
    assert mae(np.array([1.0, 4.0]), np.array([2.0, 2.0])) == 1.5
    # PHM08: a late prediction (d=+10) costs e-1, an early one (d=-13) costs e-1 as well.
    assert phm08_score(np.array([20.0]), np.array([10.0])) == pytest.approx(math.e - 1)
    assert phm08_score(np.array([0.0]), np.array([13.0])) == pytest.approx(math.e - 1)
    assert roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == 0.75
    assert roc_auc(np.array([0.5, 0.5]), np.array([0, 1])) == 0.5
    assert roc_auc(np.array([0.1]), np.array([1])) is None
    report = regression_report(np.zeros(2), np.zeros(2), np.zeros(2), np.zeros(2))
    assert report["rmse"] == 0.0 and report["auc"] is None and report["n"] == 2
