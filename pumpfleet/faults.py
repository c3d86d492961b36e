"""Sensor faults and drift injected into a simulated fleet, and the record of both.

Faults are bad data that validation must catch or tolerate; drift is a real change in
the fleet that monitoring should see, never bad rows. Every injection is recorded
(pump, channel, kind, first and last true timestamp, rows changed) so that a test or
the ingest job can reconcile what validation found with what was injected.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pumpfleet.errors import InputError
from pumpfleet.schema import CHANNEL_NAMES, CHANNELS, CLASS_CHANNELS, PUMP_CLASSES

if TYPE_CHECKING:
    import pyarrow as pa

FaultKind = Literal[
    "dropout", "stuck", "spike", "unit_error", "duplicate", "out_of_order", "clock_skew"
]
DriftKind = Literal["offset", "regime", "seasonal", "composition"]
# Row faults move or add rows, so they run after the value faults, in this order:
# duplicates last because they shift every later row index.
ROW_FAULTS: tuple[str, ...] = ("clock_skew", "out_of_order", "duplicate")
# A channel written in the wrong unit: value * scale + offset.
UNIT_ERRORS: dict[str, tuple[float, float]] = {
    "motor_temp": (1.8, 32.0),  # degF instead of degC
    "intake_pressure": (14.5038, 0.0),  # psi instead of bar
    "discharge_pressure": (14.5038, 0.0),
    "flow": (6.28981, 0.0),  # bbl/d instead of m3/d
    "vibration": (1 / 25.4, 0.0),  # in/s instead of mm/s
}
DAY_MS = 86_400_000
TRUE_TS = "_true_ts"  # clean timestamps carried through the row faults


class _Targeted(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    classes: tuple[str, ...] | None = None  # None: every class
    pumps: float | tuple[str, ...] = 1.0  # a share of those classes' pumps, or pump ids
    start_day: float = Field(default=0.0, ge=0)
    channel: str | None = None

    @field_validator("classes")
    @classmethod
    def _known_classes(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if v is not None and not set(v) <= set(PUMP_CLASSES):
            raise ValueError(f"unknown classes {sorted(set(v) - set(PUMP_CLASSES))}")
        return v

    @field_validator("channel")
    @classmethod
    def _known_channel(cls, v: str | None) -> str | None:
        if v is not None and v not in CHANNEL_NAMES:
            raise ValueError(f"unknown channel {v!r}")
        return v

    @field_validator("pumps")
    @classmethod
    def _share(cls, v: float | tuple[str, ...]) -> float | tuple[str, ...]:
        if isinstance(v, float) and not 0.0 < v <= 1.0:
            raise ValueError(f"a share of pumps must be in (0, 1], got {v}")
        return v


class FaultSpec(_Targeted):
    """A sensor fault on some pumps for ``duration_days`` from ``start_day``."""

    kind: FaultKind
    duration_days: float = Field(default=1.0, gt=0)
    rate: float = Field(default=0.05, gt=0, le=1)  # share of the span's rows (spike, duplicate)
    skew_minutes: int = -120  # a multiple of the interval makes duplicate timestamps

    @model_validator(mode="after")
    def _fits_kind(self) -> FaultSpec:
        if self.kind == "unit_error" and self.channel and self.channel not in UNIT_ERRORS:
            raise ValueError(f"no unit error is defined for {self.channel}")
        if self.kind == "clock_skew" and self.skew_minutes == 0:
            raise ValueError("clock_skew needs skew_minutes != 0")
        return self


class DriftSpec(_Targeted):
    """A real change in the fleet from ``start_day`` on (to the end by default)."""

    kind: DriftKind
    duration_days: float | None = Field(default=None, gt=0)
    scale: float = 1.0  # offset: value * scale + offset
    offset: float = 0.0
    level: float = Field(default=1.15, gt=0)  # regime: new speed, as a fraction of nominal
    share: float = Field(default=0.5, gt=0, le=1)  # regime: share of speed blocks at the new level
    amplitude: float = 8.0  # seasonal: degC
    period_days: float = Field(default=30.0, gt=0)

    @model_validator(mode="after")
    def _fits_kind(self) -> DriftSpec:
        if self.kind == "offset" and self.channel is None:
            raise ValueError("offset drift needs a channel")
        return self


class Injection(BaseModel):
    """A file of faults and drifts to inject (``pumpfleet simulate --inject FILE``)."""

    model_config = ConfigDict(extra="forbid")

    faults: list[FaultSpec] = Field(default_factory=list)
    drifts: list[DriftSpec] = Field(default_factory=list)


class Record(NamedTuple):
    pump_id: str
    pump_class: str
    channel: str | None
    kind: str
    start: int  # ms, first true timestamp of the changed rows
    end: int  # ms, last one (inclusive)
    rows: int  # rows changed, copied, moved or removed
    rows_out_of_range: int  # of those, rows now outside the channel's physical range


class PumpRef(NamedTuple):
    pump_id: str
    pump_class: str
    number: int  # the pump's index in the fleet
    seed: int
    t0_ms: int  # start of the simulation


def record_schema() -> pa.Schema:
    import pyarrow as pa

    ts = pa.timestamp("ms", tz="UTC")
    return pa.schema(
        [
            pa.field("pump_id", pa.string(), nullable=False),
            pa.field("pump_class", pa.string(), nullable=False),
            pa.field("channel", pa.string()),
            pa.field("kind", pa.string(), nullable=False),
            pa.field("start", ts, nullable=False),
            pa.field("end", ts, nullable=False),
            pa.field("rows", pa.int64(), nullable=False),
            pa.field("rows_out_of_range", pa.int64(), nullable=False),
        ]
    )


def records_table(records: Sequence[Record]) -> pa.Table:
    import pyarrow as pa

    schema = record_schema()
    cols = list(zip(*records, strict=True)) if records else [() for _ in schema]
    arrays = [
        pa.array(c, type=pa.int64()).cast(f.type)
        if f.name in ("start", "end")
        else pa.array(c, type=f.type)
        for c, f in zip(cols, schema, strict=True)
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


def select(
    specs: Sequence[_Targeted], pumps: Sequence[tuple[str, str]], seed: int, salt: int
) -> dict[int, list[int]]:
    """Which specs hit which pump: pump index → spec indices, in spec order."""
    out: dict[int, list[int]] = {}
    index = {pid: i for i, (pid, _) in enumerate(pumps)}
    for k, spec in enumerate(specs):
        eligible = [i for i, (_, c) in enumerate(pumps) if not spec.classes or c in spec.classes]
        if isinstance(spec.pumps, tuple):
            unknown = sorted(set(spec.pumps) - set(index))
            if unknown:
                raise InputError(
                    f"{type(spec).__name__}: no such pumps in the fleet: {unknown[:5]}"
                )
            hit = sorted(set(eligible) & {index[p] for p in spec.pumps})
        elif eligible:
            # Seeded per spec, so adding a spec does not move the pumps another one hits.
            rng = np.random.default_rng([seed, salt, k])
            size = max(1, round(spec.pumps * len(eligible)))
            hit = sorted(int(i) for i in rng.choice(eligible, size=size, replace=False))
        else:
            hit = []
        for i in hit:
            out.setdefault(i, []).append(k)
    return out


def _span(spec: FaultSpec | DriftSpec, t: np.ndarray, t0: int) -> np.ndarray:
    a = t0 + round(spec.start_day * DAY_MS)
    if spec.duration_days is None:
        return np.asarray(t >= a)
    return np.asarray((t >= a) & (t < a + round(spec.duration_days * DAY_MS)))


def _changed(old: np.ndarray, new: np.ndarray) -> np.ndarray:
    return np.asarray(~((old == new) | (np.isnan(old) & np.isnan(new))))


def _record(
    ref: PumpRef, kind: str, channel: str | None, t: np.ndarray, hit: np.ndarray, oor: int = 0
) -> list[Record]:
    rows = int(hit.sum())
    if rows == 0:
        return []
    ts = t[hit]
    return [
        Record(ref.pump_id, ref.pump_class, channel, kind, int(ts.min()), int(ts.max()), rows, oor)
    ]


def _out_of_range(v: np.ndarray, channel: str, hit: np.ndarray) -> int:
    _unit, lo, hi = CHANNELS[channel]
    return int((hit & ((v < lo) | (v > hi))).sum())


def _joined(drifts: Sequence[tuple[int, DriftSpec]], t0: int) -> int:
    """When the pump starts reporting: the latest composition drift's start."""
    days = [d.start_day for _, d in drifts if d.kind == "composition"]
    return t0 + round(max(days, default=0.0) * DAY_MS)


def drift_speed(
    s: np.ndarray, t: np.ndarray, drifts: Sequence[tuple[int, DriftSpec]], ref: PumpRef
) -> tuple[np.ndarray, list[Record]]:
    """New operating regimes: some speed blocks in a span move to ``spec.level``."""
    records: list[Record] = []
    alive = t >= _joined(drifts, ref.t0_ms)  # rows a composition drift removes later
    for k, spec in drifts:
        if spec.kind != "regime":
            continue
        mask = _span(spec, t, ref.t0_ms)
        # Blocks of constant speed, cut where the span starts and ends.
        edge = np.concatenate([[True], (np.diff(s) != 0) | (np.diff(mask.astype(np.int8)) != 0)])
        block = np.cumsum(edge) - 1
        rng = np.random.default_rng([ref.seed, ref.number, 2, k])
        moved = rng.random(int(block[-1]) + 1) < spec.share
        new = np.where(mask & moved[block], spec.level, s)
        records += _record(ref, "regime", "speed_setpoint", t, _changed(s, new) & alive)
        s = new
    return s, records


def _drift(cols: dict[str, np.ndarray], spec: DriftSpec, ref: PumpRef) -> list[Record]:
    t = cols[TRUE_TS]
    mask = _span(spec, t, ref.t0_ms)
    if spec.kind == "composition":
        # The pump joins the fleet at start_day: its earlier rows never existed.
        gone = t < _joined([(0, spec)], ref.t0_ms)
        rec = _record(ref, spec.kind, None, t, gone)
        for c in list(cols):
            cols[c] = cols[c][~gone]
        return rec
    channel = spec.channel or "motor_temp"
    old = cols[channel]
    if spec.kind == "offset":
        new = np.where(mask, old * spec.scale + spec.offset, old)
    else:  # seasonal: ambient temperature follows a slow sinusoid
        days = (t - (ref.t0_ms + round(spec.start_day * DAY_MS))) / DAY_MS
        new = np.where(
            mask, old + spec.amplitude * np.sin(2 * np.pi * days / spec.period_days), old
        )
    hit = _changed(old, new)
    cols[channel] = new
    return _record(ref, spec.kind, channel, t, hit, _out_of_range(new, channel, hit))


def _value_fault(
    cols: dict[str, np.ndarray], spec: FaultSpec, ref: PumpRef, rng: np.random.Generator
) -> list[Record]:
    t = cols[TRUE_TS]
    mask = _span(spec, t, ref.t0_ms)
    fitted = CLASS_CHANNELS[ref.pump_class]
    if spec.kind == "dropout":
        hit = np.zeros(len(t), dtype=bool)
        for c in [spec.channel] if spec.channel else fitted:
            hit |= mask & ~np.isnan(cols[c])
            cols[c] = np.where(mask, np.nan, cols[c])
        return _record(ref, spec.kind, spec.channel, t, hit)
    pool = [c for c in fitted if spec.kind != "unit_error" or c in UNIT_ERRORS]
    channel = spec.channel or str(rng.choice(pool))
    old = cols[channel]
    new = old.copy()
    hi = CHANNELS[channel][2]
    if spec.kind == "stuck":
        idx = np.flatnonzero(mask)
        if idx.size:
            new[idx] = old[max(idx[0] - 1, 0)]
    elif spec.kind == "spike":
        cand = np.flatnonzero(mask & ~np.isnan(old))
        pick = (
            rng.choice(cand, size=max(1, round(spec.rate * cand.size)), replace=False)
            if cand.size
            else cand
        )
        # About half beyond the physical range (validation must flag them), half extreme
        # but possible (validation must let them through).
        beyond = rng.random(pick.size) < 0.5
        new[pick] = np.where(
            beyond,
            hi * rng.uniform(1.2, 2.0, pick.size),
            np.minimum(old[pick] * rng.uniform(3.0, 6.0, pick.size), hi),
        )
    else:
        scale, offset = UNIT_ERRORS[channel]
        new[mask] = old[mask] * scale + offset
    hit = _changed(old, new)
    cols[channel] = new
    return _record(ref, spec.kind, channel, t, hit, _out_of_range(new, channel, hit))


def _row_fault(
    cols: dict[str, np.ndarray], spec: FaultSpec, ref: PumpRef, rng: np.random.Generator
) -> list[Record]:
    t = cols[TRUE_TS]
    idx = np.flatnonzero(_span(spec, t, ref.t0_ms))
    hit = np.zeros(len(t), dtype=bool)
    if spec.kind == "clock_skew":
        hit[idx] = True
        cols["timestamp"] = np.where(
            hit, cols["timestamp"] + spec.skew_minutes * 60_000, cols["timestamp"]
        )
    elif spec.kind == "out_of_order":
        perm = rng.permutation(idx)
        hit[idx] = perm != idx
        for c, v in cols.items():
            cols[c] = v.copy()
            cols[c][idx] = v[perm]
    elif idx.size:  # duplicate: exact copies, each right after its original
        pick = rng.choice(idx, size=max(1, round(spec.rate * idx.size)), replace=False)
        hit[pick] = True
        order = np.sort(np.concatenate([np.arange(len(t)), pick]))
        for c, v in cols.items():
            cols[c] = v[order]
    return _record(ref, spec.kind, None, t, hit)


def inject(
    cols: dict[str, np.ndarray],
    events: list[tuple[int, str, str]],
    drifts: Sequence[tuple[int, DriftSpec]],
    faults: Sequence[tuple[int, FaultSpec]],
    ref: PumpRef,
) -> tuple[dict[str, np.ndarray], list[tuple[int, str, str]], list[Record], list[Record]]:
    """Apply one pump's drifts (but regime, see ``drift_speed``) then its faults.

    ``cols`` holds ``timestamp`` (ms) and float columns (NaN for null); the arrays are
    replaced, never written in place. Returns cols, events, drift and fault records.
    """
    cols = {**cols, TRUE_TS: cols["timestamp"]}
    drift_records: list[Record] = []
    # Composition first, so that the other records count only rows that exist.
    for _k, d in sorted(drifts, key=lambda kd: kd[1].kind != "composition"):
        if d.kind != "regime":
            drift_records += _drift(cols, d, ref)
    joined = _joined(drifts, ref.t0_ms)
    events = [e for e in events if e[0] >= joined]
    fault_records: list[Record] = []
    rank = {kind: i + 1 for i, kind in enumerate(ROW_FAULTS)}
    for k, f in sorted(faults, key=lambda kf: rank.get(kf[1].kind, 0)):
        rng = np.random.default_rng([ref.seed, ref.number, 1, k])
        apply = _row_fault if f.kind in ROW_FAULTS else _value_fault
        fault_records += apply(cols, f, ref, rng)
    del cols[TRUE_TS]
    return cols, events, drift_records, fault_records
