"""A seeded fleet simulator: pumps of several classes at several sites, degrading
toward failure, repaired by maintenance and after failures.

Physics, coarse but with the right shape: flow follows speed, head follows speed
squared and power (current, heat) speed cubed (the pump affinity laws); each failure
mode leaves its own signature that grows as the pump's health declines.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np

from pumpfleet import storage
from pumpfleet.errors import InputError
from pumpfleet.schema import (
    CHANNEL_NAMES,
    CLASS_CHANNELS,
    PUMP_CLASSES,
    EventType,
    events_schema,
    readings_schema,
)

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)

START = datetime(2026, 1, 1, tzinfo=UTC)
FAILURE_MODES = ("bearing_wear", "seal_leak", "motor_insulation")


@dataclass(frozen=True)
class _ClassParams:
    speed: float  # nominal speed setpoint
    regimes: tuple[float, ...]  # operating regimes, as fractions of nominal speed
    # Channel baselines at nominal speed on a healthy pump, in CHANNEL_NAMES order.
    base: tuple[float, float, float, float, float, float]
    life_days: tuple[float, float]  # range of run lives between failures


_CLASS_PARAMS: dict[str, _ClassParams] = {
    "esp": _ClassParams(60.0, (0.8, 0.9, 1.0), (60.0, 180.0, 95.0, 2.0, 45.0, 900.0), (10, 35)),
    "rod": _ClassParams(8.0, (0.75, 1.0), (0.0, 40.0, 70.0, 4.0, 30.0, 120.0), (15, 45)),
    "pcp": _ClassParams(300.0, (0.7, 0.85, 1.0), (20.0, 90.0, 80.0, 0.0, 60.0, 400.0), (12, 40)),
    "centrifugal": _ClassParams(
        3000.0, (0.85, 1.0), (5.0, 25.0, 65.0, 1.5, 120.0, 2500.0), (15, 50)
    ),
}


@dataclass(frozen=True)
class SimulationConfig:
    pumps: int = 48
    days: int = 60
    seed: int = 0
    interval_minutes: int = 60
    sites: int | None = None  # default: one site per 8 pumps

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


def _health(
    rng: np.random.Generator, n: int, life_steps: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray, list[int], list[int], list[str]]:
    """Degradation in [0, 1] per step, failure mode per step, and the event indices."""
    deg = np.zeros(n)
    mode = np.zeros(n, dtype=np.int64)
    failures: list[int] = []
    maint: list[int] = []
    failure_modes: list[str] = []
    t = 0
    first = True
    while t < n:
        life = rng.uniform(*life_steps)
        m = int(rng.integers(len(FAILURE_MODES)))
        age = rng.uniform(0, 0.8 * life) if first else 0.0
        first = False
        # One cycle may hold a maintenance visit that takes some of the wear back.
        visit = rng.uniform(0.3, 0.7) * life if rng.random() < 0.3 else None
        while t < n:
            stop = visit if visit is not None and age < visit else life
            k = min(n - t, max(1, int(np.ceil(stop - age))))
            ages = age + np.arange(k)
            deg[t : t + k] = np.clip(ages / life, 0.0, 1.0) ** 2
            mode[t : t + k] = m
            t += k
            age += k
            if stop is visit and age >= stop:
                maint.append(t - 1)
                age *= 0.4
                visit = None
                continue
            if age >= life:
                failures.append(t - 1)
                failure_modes.append(FAILURE_MODES[m])
            break
    return deg, mode, failures, maint, failure_modes


def _speed(rng: np.random.Generator, n: int, regimes: tuple[float, ...]) -> np.ndarray:
    out = np.empty(n)
    t = 0
    while t < n:
        k = int(rng.integers(72, 240))
        out[t : t + k] = regimes[int(rng.integers(len(regimes)))]
        t += k
    return out


def _channels(
    rng: np.random.Generator, cls: str, s: np.ndarray, deg: np.ndarray, mode: np.ndarray
) -> dict[str, np.ndarray]:
    base = np.asarray(_CLASS_PARAMS[cls].base, dtype=float)
    base = base * rng.uniform(0.95, 1.05, size=base.shape)  # pump-to-pump spread
    bearing = deg * (mode == 0)
    seal = deg * (mode == 1)
    insul = deg * (mode == 2)
    n = len(s)

    def noise(scale: float = 0.02) -> np.ndarray:
        return 1.0 + rng.normal(0.0, scale, n)

    values = {
        "intake_pressure": base[0] * (1.0 + 0.1 * (1.0 - s)) * (1.0 + 0.15 * seal) * noise(),
        "discharge_pressure": base[1] * s**2 * (1.0 - 0.25 * seal - 0.05 * deg) * noise(),
        "motor_temp": (25.0 + (base[2] - 25.0) * s**3 * (1 + 0.5 * insul + 0.3 * bearing))
        * (1.0 + 0.1 * deg)
        * noise(0.01),
        "vibration": base[3] * s * (1.0 + 2.5 * bearing + 0.6 * deg) * noise(0.05),
        "motor_current": base[4] * s**3 * (1.0 + 0.35 * insul + 0.1 * bearing) * noise(),
        "flow": base[5] * s * (1.0 - 0.3 * seal - 0.05 * deg) * noise(),
    }
    return values


def simulate_tables(cfg: SimulationConfig) -> tuple[pa.Table, pa.Table]:
    """Readings and events of a simulated fleet, deterministic in ``cfg.seed``."""
    import pyarrow as pa

    cfg.validate()
    steps_per_day = 24 * 60 // cfg.interval_minutes
    n = cfg.days * steps_per_day
    step = timedelta(minutes=cfg.interval_minutes)
    ts_ms = np.int64(START.timestamp() * 1000) + np.arange(n, dtype=np.int64) * int(
        step.total_seconds() * 1000
    )
    cols: dict[str, list[np.ndarray]] = {c: [] for c in readings_schema().names}
    events: dict[str, list[object]] = {c: [] for c in events_schema().names}
    for i, pump in enumerate(_pumps(cfg)):
        rng = np.random.default_rng([cfg.seed, i])
        params = _CLASS_PARAMS[pump.pump_class]
        lo, hi = params.life_days
        deg, mode, failures, maint, modes = _health(
            rng, n, (lo * steps_per_day, hi * steps_per_day)
        )
        s = _speed(rng, n, params.regimes)
        values = _channels(rng, pump.pump_class, s, deg, mode)
        cols["pump_id"].append(np.full(n, pump.pump_id, dtype=object))
        cols["pump_class"].append(np.full(n, pump.pump_class, dtype=object))
        cols["site"].append(np.full(n, pump.site, dtype=object))
        cols["timestamp"].append(ts_ms)
        cols["speed_setpoint"].append(s * params.speed)
        cols["load_setpoint"].append(np.round(0.5 + 0.5 * s, 3))
        fitted = CLASS_CHANNELS[pump.pump_class]
        for c in CHANNEL_NAMES:
            cols[c].append(values[c] if c in fitted else np.full(n, np.nan))
        happened = [(f, EventType.FAILURE, m) for f, m in zip(failures, modes, strict=True)]
        happened += [(m, EventType.MAINTENANCE, "planned") for m in maint]
        for idx, kind, detail in happened:
            events["pump_id"].append(pump.pump_id)
            events["pump_class"].append(pump.pump_class)
            events["site"].append(pump.site)
            events["timestamp"].append(int(ts_ms[idx]))
            events["event_type"].append(str(kind))
            events["detail"].append(detail)
    schema = readings_schema()
    arrays = []
    for field in schema:
        data = np.concatenate(cols[field.name])
        if field.name == "timestamp":
            arrays.append(pa.array(data, type=pa.int64()).cast(field.type))
        elif pa.types.is_floating(field.type):
            arrays.append(pa.array(data, type=field.type, mask=np.isnan(data)))
        else:
            arrays.append(pa.array(data, type=field.type))
    readings = pa.Table.from_arrays(arrays, schema=schema)
    ev = events_schema()
    events_table = pa.Table.from_pydict(
        {
            **{k: events[k] for k in ev.names if k != "timestamp"},
            "timestamp": pa.array(events["timestamp"], type=pa.int64()).cast(
                ev.field("timestamp").type
            ),
        },
        schema=ev,
    )
    return readings, events_table.sort_by([("pump_id", "ascending"), ("timestamp", "ascending")])


def write_fleet(readings: pa.Table, events: pa.Table, out: str, overwrite: bool = False) -> None:
    """Write a fleet dataset: ``readings/`` partitioned by pump class, ``events/``."""
    import pyarrow as pa
    import pyarrow.dataset as pads
    import pyarrow.parquet as pq

    readings_uri = storage.join(out, "readings")
    if storage.list_files(readings_uri, ".parquet") and not overwrite:
        raise InputError(f"{out} already holds a fleet dataset; pass --overwrite to replace it")
    fs, path = storage.resolve(readings_uri)
    pads.write_dataset(
        readings,
        base_dir=path,
        filesystem=fs,
        format="parquet",
        partitioning=pads.partitioning(pa.schema([("pump_class", pa.string())]), flavor="hive"),
        existing_data_behavior="delete_matching",
        basename_template="part-{i}.parquet",
    )
    efs, epath = storage.resolve(storage.join(out, "events"))
    efs.create_dir(epath, recursive=True)
    pq.write_table(events, f"{epath}/events.parquet", filesystem=efs)


def simulate(cfg: SimulationConfig, out: str, overwrite: bool = False) -> dict[str, int]:
    """Simulate a fleet and write it to ``out``; returns the counts written."""
    readings, events = simulate_tables(cfg)
    write_fleet(readings, events, out, overwrite=overwrite)
    kinds = events.column("event_type").to_pylist()
    counts = {
        "pumps": cfg.pumps,
        "readings": readings.num_rows,
        "failures": kinds.count(EventType.FAILURE),
        "maintenance": kinds.count(EventType.MAINTENANCE),
    }
    log.info("simulated fleet written to %s: %s", out, counts)
    return counts
