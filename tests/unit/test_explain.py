"""Occlusion attributions, with a scorer whose answer is known (no model, no cluster)."""

from __future__ import annotations

import numpy as np

from pumpfleet.explain import flagged_drivers, fleet_drivers, occlusion
from pumpfleet.features import FeatureSpec, window_features


def spec() -> FeatureSpec:
    return FeatureSpec(
        pump_class="esp",
        channels=["motor_temp", "flow"],
        window=8,
        stride=1,
        interval_seconds=3600,
        rul_cap_hours=100.0,
        horizon_hours=24.0,
        mean=[80.0, 1000.0],
        std=[10.0, 100.0],
    )


def scorer(s: FeatureSpec):  # type: ignore[no-untyped-def]
    """Risk grows with the last half of motor temperature's z-scores; flow is ignored."""

    def score(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        z = window_features(raw, s)
        heat = z[:, 4:, 0].mean(axis=1)
        risk = 1 / (1 + np.exp(-heat))
        return 100 * (1 - risk), risk

    return score


def test_the_hot_channel_and_its_recent_steps_get_the_blame() -> None:
    s = spec()
    raw = np.column_stack([np.full(8, 80.0), np.full(8, 1000.0)])
    raw[4:, 0] = 110.0  # three standard deviations hot, in the later half
    a = occlusion(scorer(s), raw, s, blocks=4)
    assert a.failure_probability > 0.9
    assert a.top() == ["motor_temp"]
    assert a.risk_by_channel[0] > 0.4 and abs(a.risk_by_channel[1]) < 1e-9
    assert a.rul_by_channel[0] < -40  # the heat took about 45 h of life off
    assert a.block == 2 and a.risk_by_time.shape == (4, 2)
    early, late = a.risk_by_time[:2, 0], a.risk_by_time[2:, 0]
    assert np.allclose(early, 0) and (late > 0).all()
    d = a.as_dict()
    assert d["top"] == ["motor_temp"] and set(d["risk_by_channel"]) == {"motor_temp", "flow"}


def test_fleet_drivers_rank_channels() -> None:
    s = spec()
    raw = np.column_stack([np.full(8, 80.0), np.full(8, 1000.0)])
    raw[4:, 0] = 100.0
    a = occlusion(scorer(s), raw, s)
    assert list(fleet_drivers([a, a])) == ["motor_temp", "flow"]
    assert fleet_drivers([]) == {}


def test_flagged_drivers_explain_the_most_at_risk_flagged_windows() -> None:
    s = spec()
    raw = np.tile(np.column_stack([np.full(8, 80.0), np.full(8, 1000.0)]), (6, 1, 1))
    raw[:, 4:, 0] += np.array([0.0, 5.0, 10.0, 20.0, 30.0, 40.0])[:, None]  # hotter and hotter
    raw[:, :, 1] += 300.0  # flow reads high everywhere, but the scorer ignores it
    score = scorer(s)
    _, risk = score(raw)
    d = flagged_drivers(score, raw, risk, s, threshold=float(risk[2]), limit=3)
    assert (d.windows, d.flagged, d.explained) == (6, 4, 3)  # windows 2..5; 3, 4, 5 explained
    assert d.top() == ["motor_temp"] and d.top_counts == {"motor_temp": 3}
    assert d.risk_by_channel["motor_temp"] > 0.4 and abs(d.risk_by_channel["flow"]) < 1e-9
    assert d.rul_hours_by_channel["motor_temp"] < -30
    assert list(d.as_dict()["risk_by_channel"]) == ["motor_temp", "flow"]
    none = flagged_drivers(score, raw, risk, s, threshold=1.0)
    assert (none.flagged, none.explained, none.risk_by_channel, none.top()) == (0, 0, {}, [])
