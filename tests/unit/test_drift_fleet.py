"""The fleet drift method (per-pump, per-regime residuals in daily chunks) on a small
synthetic fleet: quiet when nothing changes, though pumps differ and switch regimes; a
class-wide shift, one site's recalibration and a new setting each alert on the right
feature and day; the settings' window means the log keeps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pumpfleet.errors import DataError
from pumpfleet.features import FeatureSpec, Regimes
from pumpfleet.fleet_drift import (
    FleetDriftConfig,
    analyse_fleet,
    first_alerts,
    fit_reference,
    setting_means,
)

DAY0 = pd.Timestamp("2026-01-01", tz="UTC")
CENTER = np.array([[0.8], [1.0]])
SCALE = np.array([0.1])


def fleet(days: int, seed: int = 0, pumps: int = 60, **change: float) -> pd.DataFrame:
    """Window means of ``pumps`` pumps (6 sites of 10), 12 windows a day each, in two
    speed regimes (the flow follows speed), each pump with its own level. ``change``:
    ``class_from`` (day) + ``class_shift`` (relative, flow), ``site_from`` + ``site_shift``
    (site-0's pressure), ``new_from`` (day; half the windows at speed 1.2)."""
    rng = np.random.default_rng(seed)
    own = rng.normal(1.0, 0.05, (pumps, 2))
    p = np.repeat(np.arange(pumps), 12)  # a day's windows, pump by pump
    rows = []
    for d in range(days):
        speed = rng.choice([0.8, 1.0], size=len(p))
        if d >= change.get("new_from", 1e9):
            speed = np.where(rng.random(len(p)) < 0.5, 1.2, speed)
        flow = 100 * speed * own[p, 0] * rng.normal(1, 0.01, len(p))
        pressure = 50 * own[p, 1] * rng.normal(1, 0.01, len(p))
        if d >= change.get("class_from", 1e9):
            flow *= 1 + change["class_shift"]
        if d >= change.get("site_from", 1e9):
            pressure = np.where(p % 6 == 0, pressure * (1 + change["site_shift"]), pressure)
        hours = np.tile(np.arange(12) * 2, pumps)
        ts = DAY0 + pd.Timedelta(days=d) + pd.to_timedelta(hours, unit="h")
        ids, sites = [f"p{q:03d}" for q in p], [f"s{q % 6}" for q in p]
        rows.append(pd.DataFrame({"pump_id": ids, "site": sites, "timestamp": ts, "flow": flow,
                                  "pressure": pressure, "speed": speed}))  # fmt: skip
    return pd.concat(rows, ignore_index=True).sort_values("timestamp", kind="stable")


def analyse(frame: pd.DataFrame, ref_days: int = 20) -> pd.DataFrame:
    ts = pd.to_datetime(frame["timestamp"], utc=True)
    cut = DAY0 + pd.Timedelta(days=ref_days)
    cfg = FleetDriftConfig(min_pumps=10)
    ref = fit_reference(frame[ts < cut], ["flow", "pressure"], ["speed"], CENTER, SCALE, cfg)
    return analyse_fleet(frame[ts >= cut], ref, cfg)


def test_a_fleet_where_nothing_changes_stays_quiet() -> None:
    signals = analyse(fleet(30))
    assert len(signals["chunk"].unique()) == 10
    assert first_alerts(signals) == {}


def test_a_class_wide_shift_alerts_on_its_channel_the_first_day() -> None:
    signals = analyse(fleet(30, class_from=25, class_shift=0.03))
    assert first_alerts(signals) == {"flow": 5}
    day = signals[(signals["chunk"] == 5) & (signals["signal"] == "flow")]
    assert day.loc[day["kind"] == "univariate", "detail"].item() == "class"


def test_one_sites_recalibration_alerts_on_its_channel_and_names_the_site() -> None:
    signals = analyse(fleet(30, site_from=24, site_shift=0.05))
    assert first_alerts(signals) == {"pressure": 4}
    site = signals[(signals["kind"] == "site") & signals["alert"]]
    assert set(site["detail"]) == {"s0"} and set(site["signal"]) == {"pressure"}


def test_a_new_operating_setting_alerts_on_the_setting() -> None:
    signals = analyse(fleet(30, new_from=26))
    assert first_alerts(signals) == {"speed": 6}
    day = signals[(signals["chunk"] == 6) & (signals["signal"] == "speed")]
    assert day["value"].item() == pytest.approx(0.5, abs=0.1)


def test_two_alerting_days_in_a_row_are_needed_when_asked() -> None:
    signals = analyse(fleet(30, class_from=25, class_shift=0.03))
    assert first_alerts(signals, consecutive=2) == {"flow": 6}


def test_too_short_a_reference_is_refused() -> None:
    with pytest.raises(DataError, match="spans 4 days"):
        fit_reference(fleet(4), ["flow", "pressure"], ["speed"], CENTER, SCALE)


def test_the_settings_window_means_come_from_after_the_channels() -> None:
    spec = FeatureSpec(
        pump_class="esp", channels=["flow"], window=3, stride=1, interval_seconds=3600,
        rul_cap_hours=168, horizon_hours=48, mean=[0.0], std=[1.0],
        regimes=Regimes(settings=["speed"], center=[[0.8], [1.0]], scale=[0.1],
                        mean=[[0.0], [0.0]], std=[[1.0], [1.0]], rows=[1, 1]),
    )  # fmt: skip
    raw = np.array([[[5.0, 0.8], [6.0, 1.0], [7.0, np.nan]]])
    assert setting_means(raw, spec)["speed"] == pytest.approx([0.9])
    assert setting_means(raw[..., :1], spec) == {}
