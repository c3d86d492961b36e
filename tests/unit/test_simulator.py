from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from pumpfleet import physics
from pumpfleet.errors import InputError
from pumpfleet.faults import DriftSpec, FaultSpec, record_schema
from pumpfleet.schema import (
    CHANNEL_NAMES,
    CHANNELS,
    CLASS_CHANNELS,
    PUMP_CLASSES,
    events_schema,
    pump_fleet_schema,
    read_fleet_schema,
    readings_schema,
)
from pumpfleet.simulator import (
    SimulationConfig,
    _clock,
    _pump_arrays,
    _pumps,
    simulate,
    simulate_fleet,
    simulate_tables,
)
from pumpfleet.validation import REASON, spikes, stuck, validate_pump


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
    assert set(failures.detail) <= set(physics.SIGNATURES)
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


# --- failure modes: each class its own, each mode its own signature ---


def test_each_class_fails_in_its_own_modes_and_the_events_name_them() -> None:
    _, events = simulate_tables(SimulationConfig(pumps=40, days=150, seed=5))
    failures = events.to_pandas().query("event_type == 'failure'")
    assert (failures.pump_id.str.split("-").str[0] == failures.pump_class).all()
    for cls in PUMP_CLASSES:
        seen = set(failures[failures.pump_class == cls].detail)
        assert seen == set(physics.FAILURE_MODES[cls]), cls  # every mode, and no other
    assert physics.FAILURE_MODES == {
        "esp": ("bearing_wear", "seal_leak", "motor_insulation", "gas_lock", "sand_erosion"),
        "rod": ("traveling_valve_leak", "rod_fatigue", "gearbox_wear", "motor_insulation"),
        "pcp": ("bearing_wear", "stator_wear", "sand_erosion", "gas_lock"),
        "centrifugal": ("bearing_wear", "seal_leak", "motor_insulation", "cavitation"),
    }
    maint = events.to_pandas().query("event_type == 'maintenance'")
    assert set(maint.detail) == {"planned"}


def _pump(cls: str, mode: str, deg: float, s: float = 1.0, n: int = 4000) -> pd.DataFrame:
    """A pump of ``cls`` held at speed ``s`` and degradation ``deg`` in ``mode``, from
    the same draws whatever ``mode`` and ``deg``: only the signature differs."""
    k = physics.FAILURE_MODES[cls].index(mode)
    values = physics.channels(
        np.random.default_rng(7), cls, np.full(n, s), np.full(n, deg), np.full(n, k)
    )
    return pd.DataFrame(values)[list(CLASS_CHANNELS[cls])]


# What every mode does at full degradation on top of its own signature: a little more
# heat and vibration, a little less head and flow (mean degraded / mean healthy).
GENERIC = {
    "intake_pressure": 1.0,
    "discharge_pressure": 0.95,
    "motor_temp": 1.1,
    "vibration": 1.6,
    "motor_current": 1.0,
    "flow": 0.95,
}

# Per mode: the channels it moves, as bounds on mean degraded / mean healthy at deg = 1,
# and the channels it makes erratic. Every other channel moves by GENERIC alone.
SIGNATURES: dict[str, tuple[dict[str, tuple[float, float]], set[str]]] = {
    "bearing_wear": (
        {"vibration": (4.0, 7.0), "motor_temp": (1.2, 1.5), "motor_current": (1.05, 1.15)},
        set(),
    ),
    "gearbox_wear": (
        {"vibration": (4.0, 7.0), "motor_temp": (1.15, 1.5), "motor_current": (1.1, 1.2)},
        set(),
    ),
    "seal_leak": (
        {"intake_pressure": (1.1, 1.3), "discharge_pressure": (0.6, 0.8), "flow": (0.6, 0.8)},
        set(),
    ),
    "motor_insulation": ({"motor_temp": (1.3, 1.6), "motor_current": (1.25, 1.5)}, set()),
    "gas_lock": (
        {
            "intake_pressure": (0.3, 0.7),
            "motor_current": (0.6, 0.8),
            "flow": (0.45, 0.7),
            "discharge_pressure": (0.65, 0.85),
            "motor_temp": (1.25, 1.6),
        },
        {"motor_current", "flow", "discharge_pressure"},
    ),
    "sand_erosion": (
        {
            "vibration": (3.0, 5.0),
            "motor_current": (1.15, 1.4),
            "motor_temp": (1.15, 1.4),
            "discharge_pressure": (0.55, 0.8),
            "flow": (0.55, 0.8),
        },
        set(),
    ),
    "stator_wear": (
        {"flow": (0.4, 0.65), "discharge_pressure": (0.5, 0.75), "motor_current": (0.65, 0.85)},
        set(),
    ),
    "traveling_valve_leak": (
        {"flow": (0.35, 0.6), "discharge_pressure": (0.7, 0.9), "motor_current": (0.75, 0.95)},
        set(),
    ),
    "rod_fatigue": (
        {"vibration": (3.0, 4.5), "motor_current": (1.05, 1.2), "flow": (0.8, 0.92)},
        {"vibration", "motor_current"},
    ),
    "cavitation": (
        {
            "intake_pressure": (0.3, 0.5),
            "vibration": (4.0, 6.0),
            "discharge_pressure": (0.65, 0.85),
            "flow": (0.65, 0.85),
            "motor_current": (0.85, 0.95),
        },
        {"vibration", "discharge_pressure", "flow", "motor_current"},
    ),
}


def _cv(x: pd.Series) -> float:
    return float(x.std() / x.mean())


def _autocorr(x: pd.Series, lag: int) -> float:
    v = x.to_numpy()
    return float(np.corrcoef(v[lag:], v[:-lag])[0, 1])


@pytest.mark.parametrize(
    "cls, mode", [(c, m) for c, modes in physics.FAILURE_MODES.items() for m in modes]
)
def test_each_failure_mode_moves_its_own_channels(cls: str, mode: str) -> None:
    healthy, degraded = _pump(cls, mode, 0.0), _pump(cls, mode, 1.0)
    moved, erratic = SIGNATURES[mode]
    for ch in CLASS_CHANNELS[cls]:
        ratio = degraded[ch].mean() / healthy[ch].mean()
        lo, hi = moved.get(ch, (GENERIC[ch] - 0.02, GENERIC[ch] + 0.02))
        assert lo < ratio < hi, (ch, ratio)
        # Held at one speed, a channel varies by its sensor noise alone (1-5 %), unless
        # the mode makes it erratic.
        spread = _cv(degraded[ch]) / _cv(healthy[ch])
        if ch in erratic:
            assert spread > 2.0, (ch, spread)
        else:
            assert spread < 1.3, (ch, spread)


def test_gas_lock_cycles_current_and_flow_together() -> None:
    """An ESP in gas lock: intake pressure low, current down and cycling with flow
    (the pump loses prime and regains it), a hotter motor for want of cooling."""
    healthy, locked = _pump("esp", "gas_lock", 0.0), _pump("esp", "gas_lock", 1.0)
    assert locked.intake_pressure.mean() < 0.55 * healthy.intake_pressure.mean()
    assert locked.motor_temp.mean() > healthy.motor_temp.mean() + 25  # degC
    assert _cv(healthy.motor_current) < 0.03 < 0.08 < _cv(locked.motor_current)
    # The swing is a cycle shared by current and flow, not independent noise.
    assert np.corrcoef(locked.motor_current, locked.flow)[0, 1] > 0.8
    assert abs(np.corrcoef(healthy.motor_current, healthy.flow)[0, 1]) < 0.1
    # A cycle of 4-12 steps: half a cycle on, the swing has turned against itself.
    assert min(_autocorr(locked.motor_current, lag) for lag in range(2, 7)) < -0.4
    assert max(abs(_autocorr(healthy.motor_current, lag)) for lag in range(1, 13)) < 0.1


def test_cavitation_is_noisy_not_cycling() -> None:
    healthy, cavitating = (
        _pump("centrifugal", "cavitation", 0.0),
        _pump("centrifugal", "cavitation", 1.0),
    )
    assert cavitating.intake_pressure.mean() < 0.5 * healthy.intake_pressure.mean()
    assert _cv(cavitating.vibration) > 2 * _cv(healthy.vibration)
    # Step-to-step noise, with no cycle in it.
    assert max(abs(_autocorr(cavitating.vibration, lag)) for lag in range(1, 13)) < 0.1


def test_degradation_grows_the_signature() -> None:
    ratios = [
        _pump("pcp", "stator_wear", d).flow.mean() / _pump("pcp", "stator_wear", 0.0).flow.mean()
        for d in (0.25, 0.5, 0.75, 1.0)
    ]
    assert ratios == sorted(ratios, reverse=True) and ratios[0] < 1.0


@pytest.mark.parametrize("cls", PUMP_CLASSES)
def test_no_mode_leaves_the_physical_ranges_or_looks_like_a_sensor_fault(cls: str) -> None:
    """Ingest quarantines out-of-range values, spikes and stuck runs as sensor faults:
    no pump, healthy or fully degraded in any mode at any operating speed, makes one."""
    fleet = pump_fleet_schema()
    for mode in physics.FAILURE_MODES[cls]:
        for deg in (0.0, 1.0):
            for s in physics.CLASS_PARAMS[cls].regimes:
                df = _pump(cls, mode, deg, s, n=2000)
                for ch in df:
                    _unit, lo, hi = CHANNELS[ch]
                    assert lo <= df[ch].min() and df[ch].max() <= hi, (mode, deg, s, ch)
                    spec = fleet.channels[ch]
                    assert spec.spike_ratio is not None and spec.stuck_after is not None
                    values = df[ch].to_numpy()
                    assert not spikes(values, spec.spike_ratio).any(), (mode, deg, s, ch)
                    assert not stuck(values, spec.stuck_after).any(), (mode, deg, s, ch)


def test_a_simulated_fleet_has_no_reading_ingest_would_quarantine() -> None:
    readings, events = simulate_tables(SimulationConfig(pumps=16, days=120, seed=9))
    df = readings.to_pandas()
    assert not any(m.any() for m in _out_of_range(df).values())
    checked = pd.concat([validate_pump(g) for _, g in df.groupby("pump_id")])
    assert checked[REASON].isna().all()
    assert events.to_pandas().event_type.eq("failure").sum() >= 16 * 2


# --- streaming: the dataset on disk is the fleet built in memory, and it is pinned ---

# sha256 of SimulationConfig(pumps=9, days=20, seed=11) (readings sorted by pump and
# time, then events); see _digest. These pin the simulator's output so that an
# accidental change to it fails here. They were last changed on purpose when failure
# modes became class-specific (physics.SIGNATURES): the earlier digests, which the
# pre-streaming code had produced too, no longer apply. A deliberate change to the
# physics or the RNG draws changes them again: check the new output, then re-pin.
READINGS_DIGEST = "3f7d04806b1610886e05e0a9901ca9c0e38869cf75530c0eea5e8ddfc9aff40b"
EVENTS_DIGEST = "1a46c45688f0958ff1f3005f1d9e4214eae7df96ed015b4aed8552f45c7477b9"


def _digest(table: pa.Table) -> str:
    table = table.sort_by([("pump_id", "ascending"), ("timestamp", "ascending")])
    h = hashlib.sha256()
    for name in table.column_names:
        col = table.column(name)
        if pa.types.is_string(col.type):
            h.update("\n".join(col.to_pylist()).encode())
        elif pa.types.is_timestamp(col.type):
            h.update(col.cast(pa.int64()).to_numpy().tobytes())
        else:
            h.update(col.to_numpy().tobytes())  # nulls come back as NaN
    return h.hexdigest()


def _naive_table(cfg: SimulationConfig) -> pa.Table:
    """Readings assembled without the batching path: object arrays, one concat."""
    clock = _clock(cfg)
    cols: dict[str, list[np.ndarray]] = {c: [] for c in readings_schema().names}
    for i, pump in enumerate(_pumps(cfg)):
        arrays, _events, _records = _pump_arrays(cfg, i, pump, clock)
        n = len(arrays["timestamp"])
        for c in ("pump_id", "pump_class", "site"):
            cols[c].append(np.full(n, getattr(pump, c), dtype=object))
        for c, v in arrays.items():
            cols[c].append(v)
    out = []
    for field in readings_schema():
        data = np.concatenate(cols[field.name])
        if field.name == "timestamp":
            out.append(pa.array(data, type=pa.int64()).cast(field.type))
        elif pa.types.is_floating(field.type):
            out.append(pa.array(data, type=field.type, mask=np.isnan(data)))
        else:
            out.append(pa.array(data, type=field.type))
    return pa.Table.from_arrays(out, schema=readings_schema())


def _read_readings(root: Path) -> pa.Table:
    part = pads.partitioning(pa.schema([("pump_class", pa.string())]), flavor="hive")
    table = pads.dataset(root / "readings", format="parquet", partitioning=part).to_table()
    return table.select(readings_schema().names).cast(readings_schema())


def test_streamed_dataset_is_the_in_memory_fleet_and_is_pinned(tmp_path: Path) -> None:
    cfg = SimulationConfig(pumps=9, days=20, seed=11, batch_rows=1000)  # 2 pumps a batch
    counts = simulate(cfg, str(tmp_path))
    files = sorted((tmp_path / "readings").rglob("*.parquet"))
    assert len(files) == 9  # batches 0-4, each holding the classes of its 2-3 pumps
    assert {f.parent.name for f in files} == {f"pump_class={c}" for c in PUMP_CLASSES}
    on_disk = _read_readings(tmp_path)
    events = pq.read_table(tmp_path / "events" / "events.parquet")
    readings, in_memory_events = simulate_tables(cfg)
    assert counts["readings"] == on_disk.num_rows == 9 * 20 * 24
    # Streamed to disk, built in memory and assembled naively: the same fleet...
    assert _digest(on_disk) == _digest(readings) == _digest(_naive_table(cfg))
    assert events.equals(in_memory_events)
    # ...and the one pinned above.
    assert _digest(on_disk) == READINGS_DIGEST
    assert _digest(events) == EVENTS_DIGEST
    assert events.num_rows == counts["failures"] + counts["maintenance"] == 8


def test_overwrite_replaces_every_part_of_an_earlier_dataset(tmp_path: Path) -> None:
    spike = FaultSpec(kind="spike", pumps=("esp-00000",))
    simulate(SimulationConfig(pumps=8, days=2, faults=[spike]), str(tmp_path))
    (tmp_path / "fleet.json").write_text("{}")  # as if an imported dataset had been here
    simulate(SimulationConfig(pumps=1, days=1, interval_minutes=30), str(tmp_path), overwrite=True)
    assert [p.parent.name for p in (tmp_path / "readings").rglob("*.parquet")] == ["pump_class=esp"]
    assert pq.read_table(tmp_path / "faults" / "injected.parquet").num_rows == 0
    assert read_fleet_schema(str(tmp_path)).interval_seconds == 1800.0


def test_batching_does_not_change_the_fleet() -> None:
    small, _ = simulate_tables(SimulationConfig(pumps=7, days=3, batch_rows=1))
    big, _ = simulate_tables(SimulationConfig(pumps=7, days=3))
    assert small.equals(big)


def test_the_default_config_injects_nothing(tmp_path: Path) -> None:
    counts = simulate(SimulationConfig(pumps=4, days=3), str(tmp_path))
    assert set(counts) == {"pumps", "readings", "failures", "maintenance"}
    for name in ("injected", "drift"):
        table = pq.read_table(tmp_path / "faults" / f"{name}.parquet")
        assert table.num_rows == 0 and table.schema == record_schema()


# --- faults: each changes exactly the rows its record says ---

BASE = {"pumps": 8, "days": 4, "seed": 2}
SPAN = {"classes": ["esp", "pcp"], "pumps": 0.5, "start_day": 1.0, "duration_days": 1.5}
DAY = 86_400_000


def _ms(df: pd.DataFrame) -> pd.DataFrame:
    for c in ("timestamp", "start", "end"):
        if c in df:
            df[c] = df[c].astype("int64")
    return df


def _frames(**extra: Any) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Clean readings, faulty readings, fault records; timestamps as int ms."""
    clean = simulate_fleet(SimulationConfig(**BASE)).readings.to_pandas()
    fleet = simulate_fleet(SimulationConfig(**BASE, **extra))
    return _ms(clean), _ms(fleet.readings.to_pandas()), _ms(fleet.faults.to_pandas())


def _diff(a: pd.DataFrame, b: pd.DataFrame, col: str) -> np.ndarray:
    x, y = a[col].to_numpy(dtype=float), b[col].to_numpy(dtype=float)
    return np.asarray(~((x == y) | (np.isnan(x) & np.isnan(y))))


def _in_record(records: pd.DataFrame, df: pd.DataFrame, mask: np.ndarray, channel: Any) -> None:
    """Every flagged row lies in the span of a record for its pump (and channel)."""
    for pump, ts in zip(df.pump_id[mask], df.timestamp[mask], strict=True):
        r = records[(records.pump_id == pump) & (records.start <= ts) & (records.end >= ts)]
        if channel is not None:
            r = r[r.channel == channel]
        assert len(r) == 1, (pump, ts, channel)


@pytest.mark.parametrize(
    "kind, channel",
    [
        ("dropout", None),
        ("dropout", "flow"),
        ("stuck", "motor_temp"),
        ("stuck", None),
        ("spike", None),
        ("spike", "discharge_pressure"),
        ("unit_error", None),
    ],
)
def test_value_faults_change_exactly_the_recorded_rows(kind: str, channel: str | None) -> None:
    spec = FaultSpec(kind=kind, channel=channel, **SPAN)
    clean, faulty, records = _frames(faults=[spec])
    assert len(records) == 2 and set(records.kind) == {kind}  # half of 4 esp + pcp pumps
    assert set(records.pump_id.str.split("-").str[0]) <= {"esp", "pcp"}
    for col in ("pump_id", "timestamp", "speed_setpoint", "load_setpoint"):
        assert (clean[col] == faulty[col]).all()
    any_changed = np.zeros(len(clean), dtype=bool)
    for ch in CHANNEL_NAMES:
        changed = _diff(clean, faulty, ch)
        any_changed |= changed
        if channel is None and kind == "dropout":
            continue
        mine = records[records.channel == ch]
        assert changed.sum() == mine.rows.sum(), ch
        _in_record(mine, faulty, changed, ch)
    assert any_changed.sum() == records.rows.sum() > 0
    _in_record(records, faulty, any_changed, None)
    for r in records.itertuples():  # spans are 1.5 days of hourly rows from day 1
        assert r.start - clean.timestamp.min() >= DAY and r.end - r.start < 1.5 * DAY
        if kind in ("dropout", "stuck", "unit_error"):
            assert r.rows >= 35  # nearly every row of the 36 in the span
    if kind == "dropout":
        gone = _diff(clean, faulty, channel or "motor_temp")
        assert faulty.loc[gone, channel or "motor_temp"].isna().all()


def _out_of_range(df: pd.DataFrame) -> dict[str, np.ndarray]:
    return {
        ch: (df[ch] < lo).to_numpy() | (df[ch] > hi).to_numpy()
        for ch, (_unit, lo, hi) in CHANNELS.items()
    }


def test_spikes_beyond_range_are_where_the_record_says() -> None:
    spec = FaultSpec(kind="spike", classes=None, pumps=1.0, start_day=0, duration_days=4, rate=0.2)
    clean, faulty, records = _frames(faults=[spec])
    assert not any(m.any() for m in _out_of_range(clean).values())
    bad = _out_of_range(faulty)
    assert sum(int(m.sum()) for m in bad.values()) == records.rows_out_of_range.sum()
    # About half of the spikes leave the range, half stay in it.
    assert 0.3 < records.rows_out_of_range.sum() / records.rows.sum() < 0.7
    for ch, m in bad.items():
        _in_record(records, faulty, m, ch)


def test_unit_errors_are_the_converted_values() -> None:
    psi = FaultSpec(kind="unit_error", channel="discharge_pressure", **SPAN)
    clean, faulty, records = _frames(faults=[psi])
    changed = _diff(clean, faulty, "discharge_pressure")
    expected = clean.discharge_pressure[changed] * 14.5038
    assert (faulty.discharge_pressure[changed] == expected).all()
    # Hundreds of bar are thousands of psi: every converted row is out of range.
    assert records.rows.sum() == records.rows_out_of_range.sum() == changed.sum() == 72
    f = FaultSpec(kind="unit_error", channel="motor_temp", **SPAN)
    clean, faulty, records = _frames(faults=[f])
    changed = _diff(clean, faulty, "motor_temp")
    fahrenheit = clean.motor_temp[changed] * 1.8 + 32
    assert np.array_equal(faulty.motor_temp[changed], fahrenheit)
    assert changed.sum() == records.rows.sum() == 72


def test_duplicates_are_exact_copies() -> None:
    spec = FaultSpec(kind="duplicate", rate=0.25, **SPAN)
    clean, faulty, records = _frames(faults=[spec])
    assert len(faulty) - len(clean) == records.rows.sum() == 2 * 9  # 25% of 36 rows, 2 pumps
    copies = faulty.duplicated(keep="first").to_numpy()
    assert copies.sum() == records.rows.sum()
    assert faulty[~copies].reset_index(drop=True).equals(clean)
    _in_record(records, faulty, copies, None)


def test_out_of_order_rows_are_the_same_multiset() -> None:
    spec = FaultSpec(kind="out_of_order", **SPAN)
    clean, faulty, records = _frames(faults=[spec])
    assert len(faulty) == len(clean)

    def by_time(df: pd.DataFrame) -> pd.DataFrame:
        return df.sort_values(["pump_id", "timestamp"]).reset_index(drop=True)

    assert by_time(faulty).equals(by_time(clean))
    moved = (clean.timestamp != faulty.timestamp).to_numpy()
    assert moved.sum() == records.rows.sum() >= 2 * 30
    _in_record(records, clean, moved, None)
    assert (faulty.groupby("pump_id").timestamp.diff() < 0).sum() > 0


def test_clock_skew_shifts_the_span_and_makes_duplicate_timestamps() -> None:
    spec = FaultSpec(kind="clock_skew", skew_minutes=-120, **SPAN)
    clean, faulty, records = _frames(faults=[spec])
    shifted = (clean.timestamp != faulty.timestamp).to_numpy()
    assert shifted.sum() == records.rows.sum() == 2 * 36
    assert ((clean.timestamp - faulty.timestamp)[shifted] == 2 * 3_600_000).all()
    assert clean.drop(columns="timestamp").equals(faulty.drop(columns="timestamp"))
    # The first two skewed hours land on the two hours before the span.
    assert faulty.duplicated(["pump_id", "timestamp"]).sum() == 2 * 2


def test_faults_are_deterministic_by_seed(tmp_path: Path) -> None:
    kinds = ["dropout", "stuck", "spike", "unit_error", "duplicate", "out_of_order", "clock_skew"]
    specs = [
        FaultSpec(kind=k, pumps=0.3, start_day=i * 0.4, duration_days=1)
        for i, k in enumerate(kinds)
    ]
    drift = [DriftSpec(kind="seasonal"), DriftSpec(kind="composition", pumps=0.25, start_day=1)]
    a = simulate_fleet(SimulationConfig(**BASE, faults=specs, drifts=drift))
    b = simulate_fleet(SimulationConfig(**BASE, faults=specs, drifts=drift))
    c = simulate_fleet(SimulationConfig(**{**BASE, "seed": 3}, faults=specs, drifts=drift))
    assert all(x.equals(y) for x, y in zip(a, b, strict=True))
    assert not a.readings.equals(c.readings) and not a.faults.equals(c.faults)
    assert set(a.faults.column("kind").to_pylist()) == set(kinds)
    counts = simulate(SimulationConfig(**BASE, faults=specs, drifts=drift), str(tmp_path))
    written = pq.read_table(tmp_path / "faults" / "injected.parquet")
    assert written.equals(a.faults)
    rows = a.faults.to_pandas().groupby("kind").rows.sum()
    assert {k: counts[f"fault_{k}"] for k in kinds} == rows.to_dict()
    assert counts["readings"] == a.readings.num_rows == _read_readings(tmp_path).num_rows


def test_validation_catches_what_was_injected() -> None:
    faults = [
        FaultSpec(kind="spike", pumps=0.5, start_day=0, duration_days=1, rate=0.1),
        FaultSpec(kind="duplicate", pumps=0.5, start_day=1.5, duration_days=1, rate=0.2),
        FaultSpec(kind="dropout", pumps=0.25, start_day=3, duration_days=0.5),
        FaultSpec(kind="stuck", pumps=0.5, start_day=2.6, duration_days=0.3),
    ]
    fleet = simulate_fleet(SimulationConfig(**BASE, faults=faults))
    checked = pd.concat(
        [validate_pump(g) for _, g in fleet.readings.to_pandas().groupby("pump_id")]
    )
    found = checked[REASON].str.split(":").str[0].value_counts().to_dict()
    records = fleet.faults.to_pandas().groupby("kind")
    spikes = records.rows.sum()["spike"]
    beyond = records.rows_out_of_range.sum()["spike"]
    # Every injected row is caught, each for its own reason, and nothing else is.
    assert found == {
        "out_of_range": beyond,
        "spike": spikes - beyond,
        "duplicate_timestamp": records.rows.sum()["duplicate"],
        "no_readings": records.rows.sum()["dropout"],
        "stuck": records.rows.sum()["stuck"],
    }
    # ...on the very channel the record names.
    stuck = fleet.faults.to_pandas().query("kind == 'stuck'")
    flagged = checked[checked[REASON].fillna("").str.startswith("stuck:")]
    for _, rec in stuck.iterrows():
        mine = flagged[flagged.pump_id == rec.pump_id]
        assert set(mine[REASON]) == {f"stuck:{rec.channel}"}
        assert len(mine) == rec.rows


# --- drift: real changes, recorded apart from the faults ---


def test_offset_drift_recalibrates_a_class_from_a_day_on() -> None:
    d = DriftSpec(
        kind="offset", classes=["rod"], channel="vibration", scale=1.5, offset=0.2, start_day=2
    )
    clean = simulate_fleet(SimulationConfig(**BASE)).readings.to_pandas()
    fleet = simulate_fleet(SimulationConfig(**BASE, drifts=[d]))
    drifted, records = fleet.readings.to_pandas(), fleet.drifts.to_pandas()
    assert fleet.faults.num_rows == 0
    after = (drifted.pump_class == "rod") & (
        drifted.timestamp >= drifted.timestamp.min() + pd.Timedelta(days=2)
    )
    assert np.array_equal(drifted.vibration[after], clean.vibration[after] * 1.5 + 0.2)
    assert drifted.vibration[~after].equals(clean.vibration[~after])
    assert after.sum() == records.rows.sum() == 2 * 2 * 24


def test_regime_drift_brings_a_new_speed_level() -> None:
    d = DriftSpec(kind="regime", classes=["esp"], level=1.2, share=1.0, start_day=2)
    fleet = simulate_fleet(SimulationConfig(**BASE, drifts=[d]))
    df, records = fleet.readings.to_pandas(), fleet.drifts.to_pandas()
    new_level = np.isclose(df.speed_setpoint, 1.2 * 60.0) & (df.pump_class == "esp")
    day2 = df.timestamp.min() + pd.Timedelta(days=2)
    assert (df.timestamp[new_level] >= day2).all()
    assert new_level.sum() == records.rows.sum() == 2 * 2 * 24
    assert (df.load_setpoint[new_level] == 1.1).all()
    clean = simulate_fleet(SimulationConfig(**BASE)).readings.to_pandas()
    assert (df.motor_current[new_level] > clean.motor_current[new_level]).all()  # ~ speed cubed


def test_seasonal_drift_is_a_slow_sinusoid_on_motor_temp() -> None:
    d = DriftSpec(kind="seasonal", amplitude=10.0, period_days=20.0)
    clean = simulate_fleet(SimulationConfig(**BASE)).readings.to_pandas()
    df = simulate_fleet(SimulationConfig(**BASE, drifts=[d])).readings.to_pandas()
    days = (df.timestamp - df.timestamp.min()).dt.total_seconds() / 86400
    assert np.allclose(df.motor_temp - clean.motor_temp, 10 * np.sin(2 * np.pi * days / 20))


def test_composition_drift_adds_pumps_from_a_day_on(tmp_path: Path) -> None:
    d = DriftSpec(kind="composition", classes=["pcp"], pumps=0.5, start_day=3)
    counts = simulate(SimulationConfig(**BASE, drifts=[d]), str(tmp_path))
    df = _read_readings(tmp_path).to_pandas()
    records = pq.read_table(tmp_path / "faults" / "drift.parquet").to_pandas()
    events = pq.read_table(tmp_path / "events" / "events.parquet").to_pandas()
    (pump,) = records.pump_id  # half of the 2 pcp pumps
    first = df.timestamp.min() + pd.Timedelta(days=3)
    assert df[df.pump_id == pump].timestamp.min() == first
    assert (events[events.pump_id == pump].timestamp >= first).all()
    assert counts["readings"] == 8 * 4 * 24 - 3 * 24 == len(df)
    assert counts["drift_composition"] == records.rows.sum() == 3 * 24
    assert pq.read_table(tmp_path / "faults" / "injected.parquet").num_rows == 0


@pytest.mark.parametrize(
    "make",
    [
        lambda: FaultSpec(kind="melt"),
        lambda: FaultSpec(kind="spike", classes=["jet"]),
        lambda: FaultSpec(kind="spike", channel="pressure"),
        lambda: FaultSpec(kind="spike", pumps=1.5),
        lambda: FaultSpec(kind="spike", duration_days=0),
        lambda: FaultSpec(kind="unit_error", channel="motor_current"),
        lambda: DriftSpec(kind="offset"),
    ],
)
def test_impossible_specs_are_refused(make: Any) -> None:
    with pytest.raises(ValidationError):
        make()


def test_unknown_pump_ids_are_refused() -> None:
    cfg = SimulationConfig(pumps=4, days=1, faults=[FaultSpec(kind="spike", pumps=["esp-09999"])])
    with pytest.raises(InputError, match="esp-09999"):
        simulate_tables(cfg)


def test_a_window_runs_as_new_only_beyond_the_longest_pf_interval_of_its_next_failure() -> None:
    import numpy as np

    from pumpfleet.physics import CLASS_PARAMS, runs_as_new

    pf_days = max(p.pf_days[1] for p in CLASS_PARAMS.values())
    day = np.timedelta64(1, "D")
    t0 = np.datetime64("2026-01-01T00:00", "ms")
    failures = {"esp-1": np.array([t0 + 30 * day, t0 + 60 * day], dtype="datetime64[ms]")}
    ends = np.array(
        [t0, t0 + (30 - pf_days) * day, t0 + 29 * day, t0 + 31 * day, t0 + 10 * day, t0 + 85 * day],
        dtype="datetime64[ms]",
    )
    pumps = np.array(["esp-1"] * 4 + ["esp-2"] * 2)
    got = runs_as_new(pumps, ends, failures, t0 + 90 * day)
    # at exactly the P-F distance it may already wear; after a failure the next one counts;
    # a pump with no failure ahead runs as new unless the data ends within the P-F interval
    assert got.tolist() == [True, False, False, True, True, False]
