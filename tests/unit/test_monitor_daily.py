"""The monitor's daily fleet mode, wired into a whole run without Ray: each class's
summary carries its daily fleet signals (features alerted with their first day, sites
named, days analysed), and a class the method cannot analyse gets a note, never an
error that stops the run."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pumpfleet.monitoring import run
from pumpfleet.monitoring.daily import fleet_daily, snapshot_frame
from pumpfleet.settings import Settings
from pumpfleet.snapshot import open_snapshot
from tests.unit.test_monitoring_run import SPEC, write_log, write_snapshot


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    s = Settings(home=tmp_path / "ws")
    write_snapshot(s.features_dir)
    write_log(s)
    return s


def test_a_run_in_daily_fleet_mode_reports_each_class_signals(settings: Settings) -> None:
    out = run.run_monitor(settings, trigger=False, daily_fleet=True)
    daily = out["classes"]["esp"]["fleet_daily"]
    # one day of 5 pumps: too few pumps for a class statistic, so nothing alerts
    assert daily == {"days": 1, "alerting_features": {}, "sites": []}
    assert out["classes"]["esp"]["drifted"]  # NannyML's chunks still run beside it


def test_the_snapshot_windows_as_the_log_summarises_them(settings: Settings) -> None:
    snap = open_snapshot(settings.features_uri)
    frame = snapshot_frame(snap, "esp", SPEC)
    assert len(frame) == 2000 and set(frame["pump_id"]) == {"esp-0", "esp-1", "esp-2", "esp-3"}
    assert set(frame.columns) == {"motor_temp", "flow", "pump_id", "site", "timestamp"}


def test_rows_the_method_cannot_analyse_are_a_note(settings: Settings) -> None:
    snap = open_snapshot(settings.features_uri)
    rows = pd.DataFrame({"pump_id": ["esp-1"], "timestamp": [pd.Timestamp("2026-02-01", tz="UTC")]})
    short = snap.spec("esp").model_copy(update={"window": 5})
    out = fleet_daily(snap, "esp", short, rows)
    assert out == {"note": "esp: no daily fleet signals: snapshot snap1 has 3-step windows, "
                   "the model wants 5"}  # fmt: skip
