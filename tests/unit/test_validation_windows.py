from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pumpfleet.schema import CHANNEL_NAMES
from pumpfleet.validation import REASON, validate_pump
from pumpfleet.windows import (
    MS_PER_HOUR,
    WindowConfig,
    assign_splits,
    make_windows,
    windows_to_numpy,
)

T0 = pd.Timestamp("2026-01-01", tz="UTC")


def pump_frame(n: int, cls: str = "esp", start: pd.Timestamp = T0) -> pd.DataFrame:
    df = pd.DataFrame(
        {
            "pump_id": "esp-1",
            "pump_class": cls,
            "site": "site-00",
            "timestamp": pd.date_range(start, periods=n, freq="h"),
            "speed_setpoint": 50.0,
            "load_setpoint": 0.9,
        }
    )
    for i, ch in enumerate(CHANNEL_NAMES):
        df[ch] = np.arange(n, dtype=float) + i
    return df


def test_validation_marks_each_fault_with_a_reason() -> None:
    df = pump_frame(6)
    df.loc[1, "motor_temp"] = 999.0  # above the physical range
    df.loc[2, list(CHANNEL_NAMES)] = np.nan  # no readings at all
    df.loc[3, "site"] = None
    dup = df.iloc[[4]].copy()
    df = pd.concat([df, dup], ignore_index=True)  # a repeated timestamp
    out = validate_pump(df.sample(frac=1, random_state=0))  # order must not matter
    assert out[REASON].isna().sum() == 3
    assert out[REASON].dropna().value_counts().to_dict() == {
        "out_of_range:motor_temp": 1,
        "no_readings": 1,
        "missing:site": 1,
        "duplicate_timestamp": 1,
    }
    assert len(out) == len(df)  # nothing is dropped
    assert out["timestamp"].is_monotonic_increasing


def test_unknown_class_is_quarantined() -> None:
    out = validate_pump(pump_frame(3, cls="submarine"))
    assert (out[REASON] == "unknown_class").all()


def test_assign_splits_is_deterministic_and_covers_each_split() -> None:
    pumps = {"esp": [f"esp-{i}" for i in range(10)], "rod": ["rod-1", "rod-2", "rod-3"]}
    a = assign_splits(pumps, 0.15, 0.15)
    assert a == assign_splits({k: list(reversed(v)) for k, v in pumps.items()}, 0.15, 0.15)
    # 15 % of 10 pumps is 2 (1.5 rounded); of 3 it is none, raised to one per split.
    count = {
        cls: {s: [a[p] for p in ids].count(s) for s in ("train", "val", "holdout")}
        for cls, ids in pumps.items()
    }
    assert count == {
        "esp": {"train": 6, "val": 2, "holdout": 2},
        "rod": {"train": 1, "val": 1, "holdout": 1},
    }
    assert assign_splits({"pcp": ["p1", "p2"]}, 0.15, 0.15) == {"p1": "train", "p2": "train"}


def test_windows_and_rul_labels() -> None:
    cfg = WindowConfig(window=4, stride=2, rul_cap_hours=10, horizon_hours=3)
    df = pump_frame(30)
    failure = int(df.timestamp.iloc[20].value // 1_000_000)  # fails at hour 20
    table = make_windows(df, {"esp-1": [failure]}, {"esp-1": "val"}, cfg)
    ends = (
        table.column("end_time").cast("int64").to_numpy() - T0.value // 1_000_000
    ) // MS_PER_HOUR
    rul = table.column("rul_hours").to_numpy()
    # Windows end at hours 3, 5, ..., 29. Up to the failure: RUL = 20 - end, capped at 10.
    # After it no failure follows, and the record runs on for less than the cap: dropped.
    assert list(ends) == list(range(3, 21, 2))
    np.testing.assert_allclose(rul, np.minimum(20 - ends, 10))
    assert table.column("failure_within_horizon").to_pylist() == [int(r <= 3) for r in rul]
    assert set(table.column("split").to_pylist()) == {"val"}
    x = windows_to_numpy(table, 4, len(CHANNEL_NAMES))
    assert x.shape == (len(table), 4, len(CHANNEL_NAMES))
    # Last window ends at hour 19: rows 16..19 of channel 0 (values = row index).
    np.testing.assert_array_equal(x[-1, :, 0], [16, 17, 18, 19])


def test_censored_windows_take_the_cap_when_the_record_runs_on() -> None:
    cfg = WindowConfig(window=4, stride=4, rul_cap_hours=10, horizon_hours=3)
    table = make_windows(pump_frame(40), {}, {}, cfg)
    ends = np.arange(3, 40, 4)
    kept = ends[39 - ends >= 10]
    assert len(table) == len(kept)
    assert set(table.column("rul_hours").to_pylist()) == {10.0}


def test_windows_across_a_gap_are_dropped() -> None:
    cfg = WindowConfig(window=4, stride=1, rul_cap_hours=10, horizon_hours=3)
    df = pump_frame(40).drop(index=range(10, 16))  # six hours missing
    table = make_windows(df, {}, {}, cfg)
    ends = (
        table.column("end_time").cast("int64").to_numpy() - T0.value // 1_000_000
    ) // MS_PER_HOUR
    assert not any(10 <= e <= 18 for e in ends)


def test_horizon_must_be_below_cap() -> None:
    with pytest.raises(ValueError, match="horizon_hours must be below rul_cap_hours"):
        WindowConfig(rul_cap_hours=10, horizon_hours=10)
