from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pumpfleet.errors import InputError
from pumpfleet.schema import CLASS_CHANNELS, PUMP_CLASSES, events_schema, readings_schema
from pumpfleet.simulator import SimulationConfig, simulate, simulate_tables


def test_deterministic_by_seed() -> None:
    a, ea = simulate_tables(SimulationConfig(pumps=8, days=5, seed=3))
    b, eb = simulate_tables(SimulationConfig(pumps=8, days=5, seed=3))
    c, _ = simulate_tables(SimulationConfig(pumps=8, days=5, seed=4))
    assert a.equals(b) and ea.equals(eb)
    assert not a.equals(c)


def test_shape_schema_and_classes() -> None:
    readings, events = simulate_tables(SimulationConfig(pumps=8, days=10))
    assert readings.schema == readings_schema()
    assert events.schema == events_schema()
    assert readings.num_rows == 8 * 10 * 24
    assert set(readings.column("pump_class").to_pylist()) == set(PUMP_CLASSES)
    df = readings.to_pandas()
    for cls, chans in CLASS_CHANNELS.items():
        rows = df[df.pump_class == cls]
        for ch in ("intake_pressure", "vibration"):
            assert rows[ch].notna().all() == (ch in chans), (cls, ch)


def test_pumps_fail_and_are_repaired() -> None:
    readings, events = simulate_tables(SimulationConfig(pumps=12, days=60))
    kinds = events.column("event_type").to_pylist()
    assert kinds.count("failure") >= 12  # lifetimes are 10-50 days
    failures = events.to_pandas().query("event_type == 'failure'")
    assert set(failures.detail) <= {"bearing_wear", "seal_leak", "motor_insulation"}
    # Vibration rises toward a bearing failure: the last day before is above the pump's median.
    df = readings.to_pandas()
    bearing = failures[failures.detail == "bearing_wear"].iloc[0]
    pump = df[df.pump_id == bearing.pump_id].set_index("timestamp")
    before = pump.loc[: bearing.timestamp].tail(24)
    assert before.vibration.mean() > pump.vibration.median()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"pumps": 0}, "--pumps must be at least 1"),
        ({"days": 0}, "--days must be at least 1"),
        ({"interval_minutes": 0}, "--interval-minutes"),
    ],
)
def test_impossible_numbers_are_refused(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(InputError, match=message):
        simulate_tables(SimulationConfig(**kwargs))


def test_writes_a_fleet_dataset(tmp_path: Path) -> None:
    counts = simulate(SimulationConfig(pumps=4, days=3), str(tmp_path))
    parts = sorted(p.parent.name for p in (tmp_path / "readings").rglob("*.parquet"))
    assert parts == sorted(f"pump_class={c}" for c in PUMP_CLASSES)
    total = sum(pq.read_table(p).num_rows for p in (tmp_path / "readings").rglob("*.parquet"))
    assert total == counts["readings"] == 4 * 3 * 24
    assert (tmp_path / "events" / "events.parquet").exists()
    with pytest.raises(InputError, match="--overwrite"):
        simulate(SimulationConfig(pumps=4, days=3), str(tmp_path))
    simulate(SimulationConfig(pumps=4, days=3), str(tmp_path), overwrite=True)


def test_no_negative_readings() -> None:
    readings, _ = simulate_tables(SimulationConfig(pumps=8, days=20, seed=1))
    df = readings.to_pandas()
    values = df[["discharge_pressure", "motor_current", "flow"]].to_numpy()
    assert np.nanmin(values) > 0
