"""The monitor's pure parts: alert hysteresis, retrain triggers, and the NannyML analysis
of one class (drift, estimated and realised performance) on synthetic frames."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from pumpfleet.alerts import (
    AlertPolicy,
    Episode,
    TriggerState,
    alarm_bound,
    decide_retrains,
    drift_wanted,
    hysteresis,
    new_data_due,
    record_started,
    schedule_due,
)
from pumpfleet.drift import (
    AnalysisConfig,
    HealthReference,
    analyse_class,
    feature_types,
    shuffled_reference,
)
from pumpfleet.errors import DataError

NOW = datetime(2026, 3, 1, tzinfo=UTC)
P = AlertPolicy(consecutive=2, clear_after=2, cooldown_hours=24)


def test_one_noisy_chunk_neither_raises_nor_clears() -> None:
    assert not hysteresis("esp", [False, True, False, True, False], P).active
    a = hysteresis("esp", [False, True, True, False, True, True], P)
    assert a.active and a.episodes == (Episode(began=1, raised=2),)
    assert a.first_raised == 2


def test_clean_chunks_clear_and_a_new_run_raises_again() -> None:
    a = hysteresis("esp", [True, True, False, False, True, True, True], P)
    assert a.episodes == (Episode(0, 1, cleared=3), Episode(4, 5))
    assert a.active
    assert not hysteresis("esp", [], P).active


def test_k_is_configurable() -> None:
    p3 = AlertPolicy(consecutive=3)
    assert not hysteresis("esp", [True, True, False], p3).active
    assert hysteresis("esp", [True, True, True], p3).episodes[0].raised == 2


def test_retrain_once_then_cool_down() -> None:
    state = TriggerState()
    wanted = {"esp": "drift on esp: motor_temp"}
    first = decide_retrains(wanted, set(), state, NOW, P)
    assert [(t.pump_class, t.start) for t in first] == [("esp", True)]
    state = record_started(state, {"esp": "job-1"}, NOW)
    again = decide_retrains(wanted, set(), state, NOW + timedelta(hours=1), P)
    assert not again[0].start and "cooling down (23.0 h left)" in again[0].reason
    later = decide_retrains(wanted, set(), state, NOW + timedelta(hours=25), P)
    assert later[0].start


def test_no_second_job_while_one_runs() -> None:
    t = decide_retrains({"esp": "drift"}, {"esp"}, TriggerState(), NOW, P)
    assert not t[0].start and "already running" in t[0].reason


def test_state_round_trips_through_json() -> None:
    state = record_started(TriggerState(last_scheduled=NOW), {"rod": "job-2"}, NOW)
    back = TriggerState.from_json(state.to_json())
    assert back == state
    assert TriggerState.from_json(None) == TriggerState()


def test_drift_wanted_names_the_features() -> None:
    alerts = {c: hysteresis(c, d, P) for c, d in {"esp": [True, True], "rod": [True]}.items()}
    assert drift_wanted(alerts, {"esp": ["motor_temp"]}) == {"esp": "drift on esp: motor_temp"}


def test_new_data_and_schedule() -> None:
    assert not new_data_due(10_000, 0, AlertPolicy())  # unset: never
    p = AlertPolicy(new_data_rows=1000)
    assert new_data_due(2000, 1000, p) and not new_data_due(1999, 1000, p)
    assert schedule_due(None, NOW, 6)
    assert not schedule_due(NOW, NOW + timedelta(hours=5), 6)
    assert schedule_due(NOW, NOW + timedelta(hours=6), 6)


def frame(n: int, shift: float, seed: int, start: str = "2026-01-01") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    a = rng.normal(shift, 1, n)
    b = rng.normal(0, 1, n)
    c = a * 0.8 + rng.normal(0, 0.6, n)
    prob = 1 / (1 + np.exp(-(a + b)))
    rul = 80 + 10 * b
    return pd.DataFrame(
        {
            "a": a,
            "b": b,
            "c": c,
            "mode": rng.choice(["low", "high"], n),
            "timestamp": pd.date_range(start, periods=n, freq="h", tz="UTC"),
            "y_prob": prob,
            "y_pred": (prob >= 0.5).astype(int),
            "y_true": (rng.random(n) < prob).astype(int),
            "rul_pred": rul,
            "rul_true": rul + rng.normal(0, 5, n),
        }
    )


def test_feature_types() -> None:
    f = frame(200, 0, 0)
    f["setpoint"] = np.repeat([50.0, 55.0], 100)
    assert feature_types(f, ["a", "mode", "setpoint"]) == (["a"], ["mode", "setpoint"])


def test_analysis_flags_the_shifted_feature_and_estimates_performance() -> None:
    ref = shuffled_reference(frame(2000, 0, 0))  # 20 chunks set the thresholds
    calm = frame(300, 0, 1, "2026-03-01")
    shifted = frame(300, 1.0, 2, "2026-03-20")
    analysis = pd.concat([calm, shifted], ignore_index=True)
    analysis.loc[:299, ["y_true", "rul_true"]] = np.nan  # labels only for the later half
    cfg = AnalysisConfig(chunk_size=100)
    r = analyse_class("esp", ref, analysis, ["a", "b", "c", "mode"], cfg, perf_reference=ref)
    assert r.analysis_rows == 600 and r.reference_rows == 2000 and r.notes == []
    assert r.drifted()[:3] == [False, False, False]
    assert r.drifted()[3:] == [True, True, True]
    assert r.alerting_features() == ["a", "c"]  # c follows a
    kinds = set(r.chunks["kind"])
    assert kinds == {"univariate", "multivariate", "estimated", "realised"}
    est = r.chunks[(r.chunks.kind == "estimated") & (r.chunks.signal == "mae")]
    assert len(est) == 6 and est["value"].between(2, 8).all()
    real = r.chunks[(r.chunks.kind == "realised") & (r.chunks.signal == "mae")]
    assert sorted(real["chunk"]) == [3, 4, 5]  # the labelled chunks only
    uni = r.chunks[r.chunks.kind == "univariate"]
    assert set(uni["signal"]) == {"a", "b", "c", "mode"}


def test_analysis_without_reference_predictions_says_so() -> None:
    ref = shuffled_reference(frame(400, 0, 0))
    cfg = AnalysisConfig(chunk_size=100)
    r = analyse_class("esp", ref, frame(200, 0, 1), ["a", "b"], cfg, perf_reference=None)
    assert "no reference predictions" in r.notes[0]
    assert "the reference holds 4 chunks of 100; drift thresholds" in r.notes[-1]
    assert set(r.chunks["kind"]) == {"univariate", "multivariate", "realised"}


def test_analysis_refuses_too_little_data() -> None:
    cfg = AnalysisConfig(chunk_size=100)
    with pytest.raises(DataError, match="two chunks"):
        analyse_class("esp", frame(150, 0, 0), frame(200, 0, 1), ["a"], cfg)
    with pytest.raises(DataError, match="fewer than a chunk"):
        analyse_class("esp", frame(300, 0, 0), frame(50, 0, 1), ["a"], cfg)
    with pytest.raises(DataError, match="no feature in common"):
        analyse_class("esp", frame(300, 0, 0), frame(200, 0, 1), ["zz"], cfg)


def test_alarm_bound_is_the_binomial_tail() -> None:
    from scipy.stats import binom

    for n, p in ((50, 0.01), (50, 0.05), (200, 0.02)):
        k = alarm_bound(n, p, 0.001)
        assert binom.sf(k - 1, n, p) <= 0.001 < binom.sf(k - 2, n, p)
    assert alarm_bound(50, 0.01, 0.001) == 5  # 1 % expected: 5 alarms in 50 are news
    assert alarm_bound(0, 0.01, 0.001) == 1


def health_ref(n: int = 1000, far: float = 0.01) -> HealthReference:
    rng = np.random.default_rng(7)
    scores = pd.DataFrame(
        {
            "health_score": rng.gamma(2.0, 0.2, n) - 0.3,  # median about 0, a long tail
            "timestamp": pd.date_range("2025-01-01", periods=n, freq="h", tz="UTC"),
        }
    )
    rate = float((scores["health_score"] > 1).mean())
    return HealthReference("3", shuffled_reference(scores), far, rate)


def with_health(f: pd.DataFrame, shift: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    out = f.copy()
    out["health_score"] = rng.gamma(2.0, 0.2, len(f)) - 0.3 + shift
    out["anomaly"] = (out["health_score"] > 1).astype(float)
    return out


def test_health_signals_flag_a_shifted_score_and_a_high_alarm_rate() -> None:
    ref, href = shuffled_reference(frame(2000, 0, 0)), health_ref()
    assert href.expected_alarm_rate == max(0.01, href.reference_alarm_rate)
    calm = with_health(frame(300, 0, 1, "2026-03-01"), 0.0, 1)
    sick = with_health(frame(300, 0, 2, "2026-03-20"), 0.6, 2)  # inputs unchanged
    sick.loc[sick.index[:40], ["health_score", "anomaly"]] = np.nan  # another version's rows
    analysis = pd.concat([calm, sick], ignore_index=True)
    cfg = AnalysisConfig(chunk_size=100, performance=False, multivariate=False)
    r = analyse_class("esp", ref, analysis, ["a", "b"], cfg, health=href)
    assert r.drifted() == [False] * 6  # the inputs did not move
    assert r.health_flags() == [False, False, False, True, True, True]
    h = r.chunks[r.chunks["kind"] == "health"]
    assert set(h["signal"]) == {"health_score", "alarm_rate"}
    rate = h[h["signal"] == "alarm_rate"].sort_values("chunk")
    assert rate["alert"].tolist() == [False] * 3 + [True] * 3 and rate["value"].iloc[3] > 0.08
    bound = alarm_bound(100, href.expected_alarm_rate, 0.001)
    assert rate["upper"].iloc[0] == pytest.approx(bound / 100)
    plain = analyse_class("esp", ref, analysis, ["a", "b"], cfg)
    pd.testing.assert_frame_equal(r.chunks[r.chunks["kind"] != "health"], plain.chunks)


def test_health_needs_scored_rows_and_never_breaks_an_older_log() -> None:
    ref, href = shuffled_reference(frame(1000, 0, 0)), health_ref()
    cfg = AnalysisConfig(chunk_size=100, performance=False)
    old = frame(300, 0, 1, "2026-03-01")  # no health columns: an older schema
    r = analyse_class("esp", ref, old, ["a", "b"], cfg, health=href)
    assert r.health_flags() == [] and "no health scores from anomaly model v3" in r.notes[0]
    pd.testing.assert_frame_equal(r.chunks, analyse_class("esp", ref, old, ["a", "b"], cfg).chunks)
    sparse = with_health(frame(300, 0, 1, "2026-03-01"), 2.0, 1)  # every scored row alarms
    sparse.loc[sparse.index[100:195], ["health_score", "anomaly"]] = np.nan  # 5 scored rows
    r = analyse_class("esp", ref, sparse, ["a", "b"], cfg, health=href)
    assert r.health_flags() == [True, False, True]  # too few to judge chunk 1
    h = r.chunks[(r.chunks["kind"] == "health") & (r.chunks["chunk"] == 1)]
    assert h["value"].isna().all()


def test_thresholds_per_method_and_a_feature_alerts_when_either_method_does() -> None:
    from pumpfleet.drift import _any_method

    assert AnalysisConfig().thresholds() == {"wasserstein": 5.5, "hellinger": 4.5, "pca": 5.5}
    assert AnalysisConfig(std_multiplier=3).thresholds() == dict.fromkeys(
        ("wasserstein", "hellinger", "pca"), 3
    )
    ks = AnalysisConfig(continuous_methods=("kolmogorov_smirnov",), multipliers={"pca": 4})
    assert ks.thresholds() == {"kolmogorov_smirnov": 4.5, "pca": 4}

    def tidy(values: list[float], upper: float) -> pd.DataFrame:
        return pd.DataFrame(
            {"chunk": range(3), "start": 0, "end": 0, "kind": "univariate", "signal": "a",
             "value": values, "lower": np.nan, "upper": upper,
             "alert": [v > upper for v in values]}
        )  # fmt: skip

    both = _any_method([tidy([0.1, 0.5, 0.1], 0.2), tidy([2.0, 1.0, 3.0], 2.5)])
    assert both["alert"].tolist() == [False, True, True]
    assert both["value"].tolist() == [2.0, 0.5, 3.0]  # the method nearest its threshold
    assert (both["value"] / both["upper"]).round(2).tolist() == [0.8, 2.5, 1.2]
