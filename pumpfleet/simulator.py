"""A seeded fleet simulator: pumps of several classes at several sites, degrading
toward failure, repaired by maintenance and after failures.

Physics, coarse but with the right shape: flow follows speed, head follows speed
squared and power (current, heat) speed cubed (the pump affinity laws); each class has
its own failure modes (``physics.FAILURE_MODES``, named in the ``detail`` of failure
events), and each mode leaves its own signature that grows as the pump's health declines.

Pumps are generated in batches and written as they come, so memory stays bounded
whatever the fleet's size; faults and drift (``pumpfleet.faults``) are optional.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from pumpfleet import faults as fx
from pumpfleet import physics, storage
from pumpfleet.errors import InputError
from pumpfleet.faults import DriftSpec, FaultSpec
from pumpfleet.schema import (
    CHANNEL_NAMES,
    CLASS_CHANNELS,
    PUMP_CLASSES,
    EventType,
    events_schema,
    pump_fleet_schema,
    readings_schema,
    write_fleet_schema,
)

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.fs as pafs

log = logging.getLogger(__name__)

START = datetime(2026, 1, 1, tzinfo=UTC)
_STRINGS = ("pump_id", "pump_class", "site")
Event = tuple[int, str, str]  # timestamp (ms), event type, detail


@dataclass(frozen=True)
class SimulationConfig:
    pumps: int = 48
    days: int = 60
    seed: int = 0
    interval_minutes: int = 60
    sites: int | None = None  # default: one site per 8 pumps
    faults: Sequence[FaultSpec] = ()
    drifts: Sequence[DriftSpec] = ()
    batch_rows: int = 250_000  # rows generated and written at a time

    def __post_init__(self) -> None:
        # Tuples, so that a config stays immutable and comparable when given lists.
        object.__setattr__(self, "faults", tuple(self.faults))
        object.__setattr__(self, "drifts", tuple(self.drifts))

    def validate(self) -> None:
        if self.pumps < 1:
            raise InputError(f"--pumps must be at least 1, got {self.pumps}")
        if self.days < 1:
            raise InputError(f"--days must be at least 1, got {self.days}")
        if not 1 <= self.interval_minutes <= 24 * 60:
            raise InputError(
                f"--interval-minutes must be between 1 and 1440, got {self.interval_minutes}"
            )
        if self.sites is not None and self.sites < 1:
            raise InputError(f"--sites must be at least 1, got {self.sites}")
        if self.batch_rows < 1:
            raise InputError(f"batch_rows must be at least 1, got {self.batch_rows}")


@dataclass
class _Pump:
    pump_id: str
    pump_class: str
    site: str


def _pumps(cfg: SimulationConfig) -> list[_Pump]:
    n_sites = cfg.sites or max(1, cfg.pumps // 8)
    out = []
    for i in range(cfg.pumps):
        cls = PUMP_CLASSES[i % len(PUMP_CLASSES)]
        out.append(_Pump(f"{cls}-{i:05d}", cls, f"site-{(i * 7) % n_sites:02d}"))
    return out


class _Clock(NamedTuple):
    steps_per_day: int
    ts_ms: np.ndarray  # every step's timestamp, ms since the epoch


def _clock(cfg: SimulationConfig) -> _Clock:
    steps_per_day = 24 * 60 // cfg.interval_minutes
    step_ms = int(timedelta(minutes=cfg.interval_minutes).total_seconds() * 1000)
    n = cfg.days * steps_per_day
    ts_ms = np.int64(START.timestamp() * 1000) + np.arange(n, dtype=np.int64) * step_ms
    return _Clock(steps_per_day, ts_ms)


def _pump_arrays(
    cfg: SimulationConfig,
    i: int,
    pump: _Pump,
    clock: _Clock,
    drifts: Sequence[tuple[int, DriftSpec]] = (),
) -> tuple[dict[str, np.ndarray], list[Event], list[fx.Record]]:
    """One pump's columns (timestamp in ms, NaN for null) and events, before any fault
    (after regime drift, if any), from its own RNG: they depend on the seed and the
    pump's index only, never on batching."""
    rng = np.random.default_rng([cfg.seed, i])
    params = physics.CLASS_PARAMS[pump.pump_class]
    lo, hi = params.life_days
    spd, ts_ms = clock
    n = len(ts_ms)
    pf = (params.pf_days[0] * spd, params.pf_days[1] * spd)
    deg, mode, failures, maint, modes = physics.health(
        rng, n, (lo * spd, hi * spd), params.modes, pf
    )
    s = physics.speed(rng, n, params.regimes)
    records: list[fx.Record] = []
    if any(d.kind == "regime" for _, d in drifts):
        # Before the channels, which follow speed; the pump's RNG draws do not depend on s.
        ref = fx.PumpRef(pump.pump_id, pump.pump_class, i, cfg.seed, int(ts_ms[0]))
        s, records = fx.drift_speed(s, ts_ms, drifts, ref)
    values = physics.channels(rng, pump.pump_class, s, deg, mode)
    cols = {
        "timestamp": ts_ms,
        "speed_setpoint": s * params.speed,
        "load_setpoint": np.round(0.5 + 0.5 * s, 3),
    }
    fitted = CLASS_CHANNELS[pump.pump_class]
    for c in CHANNEL_NAMES:
        cols[c] = values[c] if c in fitted else np.full(n, np.nan)
    happened = [(f, EventType.FAILURE, m) for f, m in zip(failures, modes, strict=True)]
    happened += [(m, EventType.MAINTENANCE, "planned") for m in maint]
    events = [(int(ts_ms[idx]), str(kind), detail) for idx, kind, detail in happened]
    return cols, events, records


def _readings_table(pumps: Sequence[_Pump], parts: Sequence[dict[str, np.ndarray]]) -> pa.Table:
    import pyarrow as pa

    schema = readings_schema()
    # String columns as Arrow takes from one value per pump: no Python object per row.
    owner = pa.array(
        np.repeat(np.arange(len(pumps), dtype=np.int32), [len(p["timestamp"]) for p in parts])
    )
    arrays = []
    for field in schema:
        if field.name in _STRINGS:
            per_pump = pa.array([getattr(p, field.name) for p in pumps], type=field.type)
            arrays.append(per_pump.take(owner))
            continue
        data = np.concatenate([p[field.name] for p in parts])
        if field.name == "timestamp":
            arrays.append(pa.array(data, type=pa.int64()).cast(field.type))
        else:
            arrays.append(pa.array(data, type=field.type, mask=np.isnan(data)))
    return pa.Table.from_arrays(arrays, schema=schema)


def _events_table(rows: Sequence[tuple[_Pump, Event]]) -> pa.Table:
    import pyarrow as pa

    schema = events_schema()
    cols = {
        "pump_id": [p.pump_id for p, _ in rows],
        "pump_class": [p.pump_class for p, _ in rows],
        "site": [p.site for p, _ in rows],
        "timestamp": pa.array([e[0] for _, e in rows], type=pa.int64()).cast(
            schema.field("timestamp").type
        ),
        "event_type": [e[1] for _, e in rows],
        "detail": [e[2] for _, e in rows],
    }
    return pa.Table.from_pydict(cols, schema=schema)


class FleetBatch(NamedTuple):
    """Some pumps' readings and events, and what was injected into them."""

    readings: pa.Table
    events: pa.Table
    faults: list[fx.Record]
    drifts: list[fx.Record]
    pumps: int


def iter_batches(cfg: SimulationConfig) -> Iterator[FleetBatch]:
    """The fleet, about ``cfg.batch_rows`` readings at a time, whole pumps per batch."""
    cfg.validate()
    clock = _clock(cfg)
    pumps = _pumps(cfg)
    refs = [(p.pump_id, p.pump_class) for p in pumps]
    fault_hits = fx.select(cfg.faults, refs, cfg.seed, salt=1)
    drift_hits = fx.select(cfg.drifts, refs, cfg.seed, salt=2)
    per_batch = max(1, cfg.batch_rows // len(clock.ts_ms))
    for first in range(0, len(pumps), per_batch):
        chunk = pumps[first : first + per_batch]
        parts, events, faults, drifts = [], [], [], []
        for i, pump in enumerate(chunk, start=first):
            ds = [(k, cfg.drifts[k]) for k in drift_hits.get(i, [])]
            fs = [(k, cfg.faults[k]) for k in fault_hits.get(i, [])]
            cols, evs, drift_records = _pump_arrays(cfg, i, pump, clock, ds)
            if ds or fs:
                ref = fx.PumpRef(pump.pump_id, pump.pump_class, i, cfg.seed, int(clock.ts_ms[0]))
                cols, evs, more, fault_records = fx.inject(cols, evs, ds, fs, ref)
                drifts += drift_records + more
                faults += fault_records
            parts.append(cols)
            events += [(pump, e) for e in evs]
        readings = _readings_table(chunk, parts)
        yield FleetBatch(readings, _events_table(events), faults, drifts, len(chunk))


def _sort_events(events: Sequence[pa.Table]) -> pa.Table:
    import pyarrow as pa

    table = pa.concat_tables(events) if events else _events_table([])
    return table.sort_by([("pump_id", "ascending"), ("timestamp", "ascending")])


class FleetTables(NamedTuple):
    readings: pa.Table
    events: pa.Table
    faults: pa.Table  # what was injected (fx.record_schema)
    drifts: pa.Table


def simulate_fleet(cfg: SimulationConfig) -> FleetTables:
    """The whole fleet in memory, with the records of its faults and drift."""
    import pyarrow as pa

    batches = list(iter_batches(cfg))
    return FleetTables(
        pa.concat_tables([b.readings for b in batches]),
        _sort_events([b.events for b in batches]),
        fx.records_table([r for b in batches for r in b.faults]),
        fx.records_table([r for b in batches for r in b.drifts]),
    )


def simulate_tables(cfg: SimulationConfig) -> tuple[pa.Table, pa.Table]:
    """Readings and events of a simulated fleet, deterministic in ``cfg.seed``."""
    fleet = simulate_fleet(cfg)
    return fleet.readings, fleet.events


def _write_readings(fs: pafs.FileSystem, root: str, readings: pa.Table, part: int) -> None:
    """One file per class present, in the hive layout ``pump_class=<c>/part-<part>``."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    classes = readings.column("pump_class")
    for cls in pc.unique(classes).to_pylist():
        rows = readings.filter(pc.equal(classes, cls)).drop_columns(["pump_class"])
        fs.create_dir(f"{root}/pump_class={cls}", recursive=True)
        pq.write_table(rows, f"{root}/pump_class={cls}/part-{part}.parquet", filesystem=fs)


def _write_table(out: str, name: str, table: pa.Table) -> None:
    import pyarrow.parquet as pq

    fs, path = storage.resolve(storage.join(out, name))
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    pq.write_table(table, path, filesystem=fs)


def write_fleet(readings: pa.Table, events: pa.Table, out: str, overwrite: bool = False) -> None:
    """Write a fleet dataset: ``readings/`` partitioned by pump class, ``events/``."""
    storage.prepare_dataset(out, overwrite)
    fs, root = storage.resolve(storage.join(out, "readings"))
    _write_readings(fs, root, readings, 0)
    _write_table(out, "events/events.parquet", events)


def simulate(
    cfg: SimulationConfig,
    out: str,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, int]:
    """Simulate a fleet and stream it to ``out``, with ``faults/injected.parquet`` and
    ``faults/drift.parquet``; returns the counts written and, per injected kind,
    ``fault_<kind>`` / ``drift_<kind>``: the rows it changed. ``progress(pumps_done,
    pumps)`` is called after each batch."""
    cfg.validate()
    storage.prepare_dataset(out, overwrite)
    fs, root = storage.resolve(storage.join(out, "readings"))
    rows = done = 0
    events: list[pa.Table] = []
    faults: list[fx.Record] = []
    drifts: list[fx.Record] = []
    for part, batch in enumerate(iter_batches(cfg)):
        _write_readings(fs, root, batch.readings, part)
        rows += batch.readings.num_rows
        done += batch.pumps
        events.append(batch.events)
        faults += batch.faults
        drifts += batch.drifts
        if progress is not None:
            progress(done, cfg.pumps)
    ev = _sort_events(events)
    _write_table(out, "events/events.parquet", ev)
    _write_table(out, "faults/injected.parquet", fx.records_table(faults))
    _write_table(out, "faults/drift.parquet", fx.records_table(drifts))
    fleet = pump_fleet_schema()
    write_fleet_schema(
        out, fleet.model_copy(update={"interval_seconds": cfg.interval_minutes * 60.0})
    )
    kinds = ev.column("event_type").to_pylist()
    counts = {
        "pumps": cfg.pumps,
        "readings": rows,
        "failures": kinds.count(EventType.FAILURE),
        "maintenance": kinds.count(EventType.MAINTENANCE),
    }
    for prefix, specs, records in (("fault", cfg.faults, faults), ("drift", cfg.drifts, drifts)):
        for kind in sorted({s.kind for s in specs}):
            counts[f"{prefix}_{kind}"] = sum(r.rows for r in records if r.kind == kind)
    log.info("simulated fleet written to %s: %s", out, counts)
    return counts
