"""The pure decisions: promotion, A/B arm assignment, drift verdict; and metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError

from pumpfleet.drift import drift_verdict
from pumpfleet.metrics import Metrics, mae, phm08_score, regression_report, rmse, roc_auc
from pumpfleet.promotion import Decision, Gate, ModelReport, PromotionPolicy, decide_promotion
from pumpfleet.routing import Arm, assign_arm, bucket

M = {"auc": None, "precision": None, "recall": None, "brier": 0.1, "ece": 0.05, "phm08": 1.0}
BASE = Metrics(n=500, rmse=40.0, mae=30.0, **M)


def metrics(rmse: float, n: int = 500) -> Metrics:
    return Metrics(n=n, rmse=rmse, mae=rmse * 0.8, **M)


def report(
    rmse: float,
    slices: dict[str, dict[str, float]] | None = None,
    *,
    n: int = 500,
    latency: float | None = 0.05,
    size: int | None = 20_000,
    parity: float | None = 1e-7,
    version: str = "2",
) -> ModelReport:
    """A report with ``slices`` given as {dim: {value: rmse}} (n=100 each, or the n
    given after a colon in the value's name, e.g. "s9:10")."""
    sl: dict[str, dict[str, Metrics]] = {}
    for dim, values in (slices or {}).items():
        sl[dim] = {}
        for key, value in values.items():
            name, _, size_n = key.partition(":")
            sl[dim][name] = metrics(value, int(size_n or 100))
    return ModelReport(
        **metrics(rmse, n).model_dump(),
        version=version,
        slices=sl,
        latency_p50_ms=latency,
        size_bytes=size,
        onnx_parity_max_abs=parity,
    )


def gate(d: Decision, name: str) -> Gate:
    return next(g for g in d.gates if g.name == name)


def test_first_model_must_beat_baseline() -> None:
    policy = PromotionPolicy(min_gain_over_baseline=0.1)
    d = decide_promotion(report(20.0), None, BASE, policy)
    assert d.promote and d.reason.startswith("first model: promoted: rmse 20.000 beats baseline")
    assert gate(d, "slices").status == "skip"  # slices guard against a champion only
    d = decide_promotion(report(37.0), None, BASE, policy)
    assert not d.promote
    assert d.reason == (
        "first model: rejected: overall: rmse 37.000 does not beat baseline 40.000 "
        "(gain 7.5%, needs >= 10.0%: rmse <= 36.000)"
    )
    # Exactly on the line passes against the baseline.
    assert decide_promotion(report(36.0), None, BASE, policy).promote


def test_challenger_must_beat_champion_by_the_margin() -> None:
    policy = PromotionPolicy(min_gain_over_champion=0.05)
    champ = report(20.0, version="1")
    d = decide_promotion(report(18.0), champ, BASE, policy)
    assert d.promote and d.reason.startswith("vs champion v1: promoted: rmse 18.000 beats")
    d = decide_promotion(report(19.5), champ, BASE, policy)
    assert not d.promote and "overall: rmse 19.500 does not beat champion 20.000" in d.reason
    # Better overall means strictly better: a tie keeps the champion.
    assert not decide_promotion(
        report(20.0), champ, BASE, PromotionPolicy(min_gain_over_champion=0)
    ).promote
    assert not decide_promotion(report(19.7), champ, BASE, PromotionPolicy()).promote  # 1.5 %


def test_no_slice_may_get_worse_beyond_the_margin() -> None:
    policy = PromotionPolicy(slice_margin=0.1, slice_margin_abs=0.5)
    champ = report(20.0, {"site": {"s1": 20.0, "s2": 20.0}, "rul": {"0-24h": 10.0}}, version="1")
    better = {"site": {"s1": 10.0, "s2": 21.9}, "rul": {"0-24h": 10.9}}
    d = decide_promotion(report(15.0, better), champ, BASE, policy)
    assert d.promote, d.reasons  # +9.5 % and +9 %: within 10 %
    worse = {"site": {"s1": 10.0, "s2": 22.5}, "rul": {"0-24h": 10.0}}
    d = decide_promotion(report(15.0, worse), champ, BASE, policy)
    assert not d.promote
    assert gate(d, "slice site=s2").line == (
        "FAIL slice site=s2: rmse 22.500 vs champion 20.000 (+12.5%; allowed <= 22.000, n=100)"
    )
    assert gate(d, "slice site=s1").status == "pass" and gate(d, "overall").status == "pass"
    assert d.reason.startswith("vs champion v1: rejected: slice site=s2: rmse 22.500")


def test_the_absolute_slice_margin_keeps_small_errors_from_failing_on_noise() -> None:
    champ = report(20.0, {"rul": {"cap": 2.0}}, version="1")
    # +40 %, but only 0.8 h: within the absolute margin of 1 h.
    assert decide_promotion(
        report(15.0, {"rul": {"cap": 2.8}}), champ, BASE, PromotionPolicy()
    ).promote
    d = decide_promotion(report(15.0, {"rul": {"cap": 3.1}}), champ, BASE, PromotionPolicy())
    assert not d.promote and "allowed <= 3.000" in gate(d, "slice rul=cap").detail


def test_small_or_unmatched_slices_are_reported_not_gated() -> None:
    champ = report(20.0, {"site": {"s1": 10.0, "s9:10": 1.0}}, version="1")
    ch = report(15.0, {"site": {"s1": 10.0, "s9:10": 50.0, "s7": 80.0}})
    d = decide_promotion(ch, champ, BASE, PromotionPolicy(min_slice_size=50))
    assert d.promote, d.reasons
    assert gate(d, "slice site=s9").line == "SKIP slice site=s9: n=10 < 50: not gated"
    assert gate(d, "slice site=s7").status == "skip"
    # A smaller minimum gates it.
    assert not decide_promotion(ch, champ, BASE, PromotionPolicy(min_slice_size=5)).promote


def test_latency_size_and_parity_budgets() -> None:
    champ = report(20.0, version="1", latency=0.04, size=10_000)
    policy = PromotionPolicy(max_latency_ms=1.0, max_size_bytes=50_000, parity_tolerance=1e-5)
    ok = decide_promotion(report(10.0), champ, BASE, policy)
    assert ok.promote
    assert (
        gate(ok, "latency").line == "PASS latency: p50 0.050 ms <= 1 ms budget (champion 0.040 ms)"
    )
    assert gate(ok, "size").detail == "ONNX 20,000 bytes <= 50,000 budget (champion 10,000)"
    assert gate(ok, "parity").detail == "max |torch - onnx| 1.0e-07 <= 1e-05"
    cases = {
        "latency": report(10.0, latency=1.5),
        "size": report(10.0, size=60_000),
        "parity": report(10.0, parity=3e-4),
    }
    for name, ch in cases.items():
        d = decide_promotion(ch, champ, BASE, policy)
        assert not d.promote and [g.name for g in d.gates if g.status == "fail"] == [name]
        # The budgets hold for a first model too.
        assert not decide_promotion(ch, None, BASE, policy).promote


def test_unmeasured_budgets_fail() -> None:
    d = decide_promotion(
        report(10.0, latency=None, size=None, parity=None), None, BASE, PromotionPolicy()
    )
    assert not d.promote
    assert [g.line for g in d.gates if g.status == "fail"] == [
        "FAIL latency: not measured",
        "FAIL size: not measured",
        "FAIL parity: no onnx_parity_max_abs recorded for this version at training",
    ]


def test_every_gate_is_in_the_reasons() -> None:
    champ = report(20.0, {"site": {"s1": 20.0}}, version="1")
    d = decide_promotion(report(10.0, {"site": {"s1": 10.0}}), champ, BASE, PromotionPolicy())
    assert [line.split(":")[0] for line in d.reasons] == [
        "PASS overall",
        "PASS slice site=s1",
        "PASS latency",
        "PASS size",
        "PASS parity",
    ]


def test_the_policy_metric_and_validation() -> None:
    champ = report(20.0, version="1")
    ch = report(10.0).model_copy(update={"mae": 30.0})
    assert decide_promotion(ch, champ, BASE, PromotionPolicy()).promote
    d = decide_promotion(ch, champ, BASE, PromotionPolicy(metric="mae"))
    assert not d.promote and "mae 30.000 does not beat champion 16.000" in d.reason
    with pytest.raises(ValidationError):
        PromotionPolicy(metric="auc")  # higher is better: not a gate metric
    with pytest.raises(ValidationError):
        PromotionPolicy(min_gain=0.1)  # a misspelt knob is an error, not a default
    with pytest.raises(ValidationError):
        ModelReport.model_validate({"mae": 1.0})


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
