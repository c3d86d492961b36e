"""benchmarks.fleet_monitor's pieces without Ray: the site recalibration hits exactly one
site's pumps, all of one class; every window of every pump is cut as the service receives
it (channels then settings, one every stride, ending at its last reading)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from benchmarks.fleet_monitor import SITES, drifts, pump_windows
from pumpfleet.features import FeatureSpec, Regimes
from pumpfleet.simulator import SimulationConfig, simulate_fleet


def test_the_recalibration_hits_one_site_of_one_class() -> None:
    cfg = SimulationConfig(pumps=200, days=2, seed=0, sites=SITES, drifts=drifts(200, 1.0))
    fleet = simulate_fleet(cfg)
    hit = fleet.drifts.to_pandas()
    readings = fleet.readings.to_pandas()
    site = readings.drop_duplicates("pump_id").set_index("pump_id")["site"]
    recal = hit[hit["kind"] == "offset"]
    assert len(recal) == 5 and set(site[recal["pump_id"]]) == {"site-00"}
    assert set(recal["pump_class"]) == {"esp"} and set(recal["channel"]) == {"discharge_pressure"}
    assert set(hit.loc[hit["kind"] == "regime", "pump_class"]) == {"rod"}
    assert set(hit.loc[hit["kind"] == "seasonal", "pump_class"]) == {"pcp"}


def test_every_window_of_every_pump_channels_then_settings() -> None:
    spec = FeatureSpec(
        pump_class="esp", channels=["flow"], window=3, stride=2, interval_seconds=3600,
        rul_cap_hours=168, horizon_hours=48, mean=[0.0], std=[1.0],
        regimes=Regimes(settings=["speed"], center=[[0.8], [1.0]], scale=[0.1],
                        mean=[[0.0], [0.0]], std=[[1.0], [1.0]], rows=[1, 1]),
    )  # fmt: skip
    ts = pd.date_range("2026-01-01", periods=7, freq="h", tz="UTC")
    readings = pd.DataFrame({"pump_id": "p1", "site": "s1", "timestamp": ts,
                             "flow": np.arange(7.0), "speed": np.full(7, 0.8)})  # fmt: skip
    raw, keys = pump_windows(readings, spec)
    assert raw.shape == (3, 3, 2)
    assert raw[:, :, 0].tolist() == [[0, 1, 2], [2, 3, 4], [4, 5, 6]]
    assert list(keys["end_time"]) == list(ts[[2, 4, 6]].to_numpy())
    assert set(keys["site"]) == {"s1"} and np.allclose(raw[:, :, 1], 0.8)
