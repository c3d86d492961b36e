"""The A/B report: truth from feedback, per-arm metrics and their intervals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pumpfleet.abreport import SHADOW, arm_reports, format_report

T0 = pd.Timestamp("2026-01-01", tz="UTC")


def _log(n_pumps: int = 40, per_pump: int = 10, seed: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Pumps that fail at known times; the champion is off by N(0, 10) h, the challenger
    (on half the pumps) by N(0, 5) h."""
    rng = np.random.default_rng(seed)
    rows, fb = [], []
    for p in range(n_pumps):
        pid = f"p{p:03d}"
        fails = T0 + pd.Timedelta(hours=200 + p)
        arm = "challenger" if p % 2 else "champion"
        for k in range(per_pump):
            ts = T0 + pd.Timedelta(hours=10 * k)
            true = (fails - ts).total_seconds() / 3600
            noise = rng.normal(0, 5 if arm == "challenger" else 10)
            rows.append(
                {"pump_id": pid, "pump_class": "esp", "timestamp": ts, "arm": arm,
                 "model_version": "2" if arm == "challenger" else "1",
                 "rul_hours": true + noise, "shadow_version": None, "shadow_rul_hours": None}
            )  # fmt: skip
        fb.append({"pump_id": pid, "pump_class": "esp", "observed_at": fails,
                   "failed_at": fails, "rul_hours": None})  # fmt: skip
    return pd.DataFrame(rows), pd.DataFrame(fb)


def test_truth_comes_from_the_failure_after_each_prediction() -> None:
    log, fb = _log(n_pumps=2, per_pump=3)
    log["rul_hours"] = [200, 190, 180, 201, 191, 181]  # exact for both pumps
    reports, _ = arm_reports(log, fb)
    assert {r.arm: r.rmse for r in reports} == {"champion": 0.0, "challenger": 0.0}
    assert all(r.labelled == 3 for r in reports)


def test_rul_seen_in_hindsight_counts_from_its_observation() -> None:
    log, _ = _log(n_pumps=1, per_pump=1)
    log["rul_hours"] = 100.0
    fb = pd.DataFrame([{"pump_id": "p000", "pump_class": "esp",
                        "observed_at": T0 + pd.Timedelta(hours=30), "failed_at": None,
                        "rul_hours": 60.0}])  # fmt: skip
    (r,), _ = arm_reports(log, fb)
    assert r.rmse == 10.0  # true RUL at T0 was 60 + 30 = 90 h


def test_predictions_without_later_feedback_are_not_scored() -> None:
    log, fb = _log(n_pumps=4, per_pump=5)
    fb = fb.iloc[:1]
    reports, _ = arm_reports(log, fb)
    assert sum(r.labelled for r in reports) == 5
    assert sum(r.predictions for r in reports) == 20


def test_the_better_challenger_is_called_better_with_an_interval() -> None:
    log, fb = _log()
    reports, diffs = arm_reports(log, fb, seed=3)
    by_arm = {r.arm: r for r in reports}
    assert 8 < by_arm["champion"].rmse < 12 and 3.5 < by_arm["challenger"].rmse < 6.5
    for r in reports:
        assert r.rmse_ci[0] <= r.rmse <= r.rmse_ci[1]
        assert r.pumps == 20
    (d,) = diffs
    assert d.test == "A/B" and d.ci[1] < 0 and d.verdict == "better"
    # The bootstrap's median difference is the difference of the arms' RMSEs.
    rmse_gap = by_arm["challenger"].rmse - by_arm["champion"].rmse
    assert d.rmse_diff == pytest.approx(rmse_gap, abs=0.5)
    assert d.ci[0] <= d.rmse_diff <= d.ci[1]
    # The report's last row is the difference with its interval and verdict.
    last = format_report(reports, diffs).splitlines()[-1].split()
    assert last == [
        "esp",
        "A/B",
        f"{d.rmse_diff:.1f}",
        f"[{d.ci[0]:.1f},",
        f"{d.ci[1]:.1f}]",
        "better",
    ]


def test_shadow_scores_are_compared_paired() -> None:
    log, fb = _log()
    log["arm"] = "champion"
    log["shadow_version"] = "2"
    log["shadow_rul_hours"] = log["rul_hours"] + 30.0  # the challenger is 30 h late
    reports, diffs = arm_reports(log, fb)
    by_arm = {r.arm: r for r in reports}
    assert set(by_arm) == {"champion", SHADOW}
    assert (by_arm[SHADOW].versions, by_arm[SHADOW].labelled) == ("v2", 400)
    assert by_arm[SHADOW].bias == pytest.approx(by_arm["champion"].bias + 30.0)
    (d,) = diffs
    assert d.test == "shadow (paired)" and d.ci[0] > 0 and d.rmse_diff > 20
    # Paired: the point difference is the two RMSEs over the same requests.
    assert d.rmse_diff == pytest.approx(by_arm[SHADOW].rmse - by_arm["champion"].rmse)
    assert d.verdict == "worse"


def test_nothing_logged_says_so() -> None:
    assert arm_reports(pd.DataFrame(), pd.DataFrame()) == ([], [])
    assert format_report([], []) == "no predictions logged yet"


def test_true_rul_is_capped_as_the_models_predictions_are() -> None:
    # found: a pump failing 900 h after a prediction counted 732 h of error against a
    # model that can say at most 168 h (its cap), inflating the realised RMSE
    log, _ = _log(n_pumps=1, per_pump=1)
    log["rul_hours"] = 168.0  # "at least the cap"
    fb = pd.DataFrame([{"pump_id": "p000", "pump_class": "esp",
                        "failed_at": T0 + pd.Timedelta(hours=900), "observed_at": None,
                        "rul_hours": None}])  # fmt: skip
    (r,), _ = arm_reports(log, fb, rul_cap_hours={"esp": 168.0})
    assert (r.rmse, r.bias, r.labelled) == (0.0, 0.0, 1)
    (uncapped,), _ = arm_reports(log, fb)  # a class with no cap given stays as it was
    assert uncapped.rmse == 732.0
    # below the cap nothing changes
    log["rul_hours"] = 100.0
    fb["failed_at"] = T0 + pd.Timedelta(hours=90)
    (r,), _ = arm_reports(log, fb, rul_cap_hours={"esp": 168.0})
    assert r.rmse == 10.0


def test_the_monitor_caps_the_true_rul_at_the_champions_cap() -> None:
    from pumpfleet.drift import RUL_TRUE, Y_TRUE
    from pumpfleet.monitoring.reference import Reference, analysis_frame

    ts = [T0, T0 + pd.Timedelta(hours=800)]
    rows = pd.DataFrame({"pump_id": "p1", "pump_class": "esp", "timestamp": ts,
                         "model_version": "1", "rul_hours": 168.0,
                         "failure_probability": 0.0})  # fmt: skip
    fb = pd.DataFrame([{"pump_id": "p1", "failed_at": T0 + pd.Timedelta(hours=830),
                        "observed_at": T0 + pd.Timedelta(hours=830)}])  # fmt: skip
    ref = Reference(pd.DataFrame(), None, [], "snap1", "1", rul_cap_hours=168.0)
    a = analysis_frame(rows, fb, ref)
    assert a[RUL_TRUE].tolist() == [168.0, 30.0] and a[Y_TRUE].tolist() == [0.0, 1.0]
