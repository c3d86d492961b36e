"""Validation as array functions over a block of whole pumps (the vectorised ingest core).

A block is any set of readings that holds every row of each pump in it (one file, a
group of files, or a partition of Ray Data's shuffle). :func:`read_block` puts its rows
in the order validation sees a pump's rows in (by pump, then by time, then by the source
file's place in the ingest's file list, stable), with strings as integer codes, time as
integers and every value as float64; :func:`validate_block` gives each row an integer
reason code (0: good). The rules are :func:`pumpfleet.validation.validate_pump`'s, the
reference these functions are proven equal to: a rule that looks at neighbours (a
duplicate timestamp, a stuck or spiking sensor) compares a row with the rows beside it
in the same pump only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pumpfleet.schema import KEY_COLUMNS, FleetSchema

PATH = "path"
# Timestamps sort after every real one where they are missing (pandas puts NaT last).
_NO_TIME = np.iinfo(np.int64).max
_PER_MS = {"s": None, "ms": 1, "us": 1_000, "ns": 1_000_000}


@dataclass
class Codes:
    """A string column as integer codes (-1: missing) into ``names``."""

    codes: np.ndarray  # int32
    names: np.ndarray  # object: str

    def take(self, idx: np.ndarray) -> Codes:
        return Codes(self.codes[idx], self.names)


def codes_of(column: pa.ChunkedArray | pa.Array) -> Codes:
    """Integer codes of a string column (in order of first appearance), or a dictionary
    column's own indices where its dictionary holds each value once."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_dictionary(arr.type):
        names = arr.dictionary.cast(pa.string())
        if names.null_count == 0 and len(pc.unique(names)) == len(names):  # its own codes
            codes = arr.indices.cast(pa.int32()).fill_null(-1).to_numpy(zero_copy_only=False)
            return Codes(codes, np.asarray(names.to_pylist(), dtype=object))
        arr = arr.cast(arr.type.value_type)
    if pa.types.is_null(arr.type):
        return Codes(np.full(len(arr), -1, np.int32), np.array([], dtype=object))
    enc = pc.dictionary_encode(arr.cast(pa.string()))
    codes = enc.indices.fill_null(-1).to_numpy().astype(np.int32, copy=False)
    return Codes(codes, np.asarray(enc.dictionary.to_pylist(), dtype=object))


def _time(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(raw integers in the column's unit, missing mask, milliseconds since the epoch,
    floored as pandas' ``as_unit("ms")`` does)."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_null(arr.type):
        n = len(arr)
        return np.zeros(n, np.int64), np.ones(n, bool), np.zeros(n, np.int64)
    unit = arr.type.unit if pa.types.is_timestamp(arr.type) else "ms"
    if unit == "s":  # widen: a second is a whole number of milliseconds
        arr, unit = arr.cast(pa.timestamp("ms", tz=arr.type.tz)), "ms"
    missing = arr.is_null().to_numpy(zero_copy_only=False)
    raw = arr.cast(pa.int64()).fill_null(0).to_numpy()
    per_ms = _PER_MS[unit] or 1
    ms = raw if per_ms == 1 else np.floor_divide(raw, per_ms)
    return raw, missing, ms


def _time_type(t: pa.DataType) -> pa.DataType:
    """The type quarantined rows' times are written back in (seconds widened to ms)."""
    if not pa.types.is_timestamp(t):
        return pa.timestamp("ms", tz="UTC")
    return pa.timestamp("ms", tz=t.tz) if t.unit == "s" else t


def _floats(table: pa.Table, name: str) -> np.ndarray:
    col = table.column(name)
    if col.type != pa.float64():
        col = pc.cast(col, pa.float64())
    return np.asarray(col.to_numpy(), dtype=np.float64)


@dataclass
class Block:
    """Readings of whole pumps, in validation order, as arrays."""

    pump: Codes
    cls: Codes
    site: Codes
    path: Codes
    ts: np.ndarray  # raw integers, in the column's unit; _NO_TIME where missing
    ts_missing: np.ndarray
    ms: np.ndarray  # milliseconds since the epoch
    values: dict[str, np.ndarray]  # channels and settings, float64, NaN: missing
    ts_type: pa.DataType  # the input's time type (seconds widened to ms)

    def __len__(self) -> int:
        return len(self.ts)

    def take(self, idx: np.ndarray) -> Block:
        return Block(
            self.pump.take(idx),
            self.cls.take(idx),
            self.site.take(idx),
            self.path.take(idx),
            self.ts[idx],
            self.ts_missing[idx],
            self.ms[idx],
            {k: v[idx] for k, v in self.values.items()},
            self.ts_type,
        )


def _in_order(p: np.ndarray, t: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Whether each row after the first is in order after the one before it."""
    return (p[1:] != p[:-1]) | (t[1:] > t[:-1]) | ((t[1:] == t[:-1]) & (r[1:] >= r[:-1]))


def _validation_order(pump: np.ndarray, ts: np.ndarray, rank: np.ndarray) -> np.ndarray | None:
    """Positions that order rows by pump, then time, then file rank, stable (the
    reference sorts a pump's rows by file, then by time, stably); None where they are
    in that order already (a simulator's or an adapter's files usually are)."""
    n = len(pump)
    if n < 2:
        return None
    if bool(np.all(pump[1:] >= pump[:-1])) and bool(np.all(_in_order(pump, ts, rank))):
        return None
    order = np.argsort(pump, kind="stable")
    p, t, r = pump[order], ts[order], rank[order]
    bad = ~_in_order(p, t, r)
    if not bad.any():
        return order
    # Sort again only the pumps whose rows are out of order.
    unsorted = np.zeros(int(p.max()) + 1, dtype=bool)
    unsorted[p[1:][bad]] = True
    rows = np.flatnonzero(unsorted[p])
    sub = np.lexsort((r[rows], t[rows], p[rows]))
    order[rows] = order[rows[sub]]
    return order


def read_block(table: pa.Table, fleet: FleetSchema, files: Sequence[str]) -> Block:
    """The rows of ``table`` (with their source ``path``, one of ``files``, and their
    ``pump_class``) as a :class:`Block` in validation order."""
    pump = codes_of(table.column("pump_id"))
    path = codes_of(table.column(PATH))
    raw, missing, ms = _time(table.column("timestamp"))
    ts = np.where(missing, _NO_TIME, raw)
    rank_of = {p: i for i, p in enumerate(files)}
    rank = np.array([rank_of.get(str(p), len(files)) for p in path.names], dtype=np.int64)
    # Rows without a pump form one group of their own, as they do in a groupby.
    key = np.where(pump.codes < 0, len(pump.names), pump.codes)
    file_rank = rank[path.codes] if len(rank) else np.zeros(len(ts), np.int64)
    block = Block(
        pump,
        codes_of(table.column("pump_class")),
        codes_of(table.column("site")),
        path,
        ts,
        missing,
        ms,
        {c: _floats(table, c) for c in (*fleet.channel_names, *fleet.settings)},
        _time_type(table.schema.field("timestamp").type),
    )
    order = _validation_order(key, ts, file_rank)
    return block if order is None else block.take(order)


def reason_names(fleet: FleetSchema) -> list[str | None]:
    """What each reason code means (code 0, None: a good row)."""
    names: list[str | None] = [None]
    names += [f"missing:{c}" for c in KEY_COLUMNS]
    names += ["unknown_class"]
    names += [f"out_of_range:{c}" for c in fleet.channels]
    names += ["no_readings", "duplicate_timestamp"]
    for c, spec in fleet.channels.items():
        if spec.stuck_after is not None:
            names.append(f"stuck:{c}")
        if spec.spike_ratio is not None:
            names.append(f"spike:{c}")
    return names


def _mark(reason: np.ndarray, hit: np.ndarray, code: int) -> None:
    np.putmask(reason, hit & (reason == 0), np.int16(code))


def validate_block(block: Block, fleet: FleetSchema) -> np.ndarray:
    """Each row's reason code (int16, indices into :func:`reason_names`; 0: good)."""
    names = reason_names(fleet)
    code = {name: i for i, name in enumerate(names)}
    n = len(block)
    reason = np.zeros(n, dtype=np.int16)
    missing = {
        "pump_id": block.pump.codes < 0,
        "pump_class": block.cls.codes < 0,
        "site": block.site.codes < 0,
        "timestamp": block.ts_missing,
    }
    for col in KEY_COLUMNS:
        _mark(reason, missing[col], code[f"missing:{col}"])
    known_code = np.array([str(c) in fleet.classes for c in block.cls.names] + [False])
    known = known_code[block.cls.codes]  # code -1 takes the last entry: not known
    _mark(reason, ~known, code["unknown_class"])
    for ch, spec in fleet.channels.items():
        v = block.values[ch]
        with np.errstate(invalid="ignore"):
            _mark(reason, (v < spec.min) | (v > spec.max), code[f"out_of_range:{ch}"])
    fitted = np.zeros(n, dtype=bool)
    for ch in fleet.channels:
        has = [ch in fleet.classes.get(str(c), ()) for c in block.cls.names] + [False]
        fitted |= np.asarray(has)[block.cls.codes] & ~np.isnan(block.values[ch])
    _mark(reason, known & ~fitted, code["no_readings"])
    pump = block.pump.codes
    dup = np.zeros(n, dtype=bool)
    if n > 1:
        # Sorted by pump and time, a repeated timestamp is the row before's.
        dup[1:] = (pump[1:] == pump[:-1]) & (block.ts[1:] == block.ts[:-1])
    _mark(reason, dup & ~block.ts_missing, code["duplicate_timestamp"])
    # The good rows so far, and whether each is its pump's next after the one before;
    # a channel's rules see the rows still good when it starts, and only the rows they
    # mark leave the set (no pass over the block per channel).
    rows = np.flatnonzero(reason == 0)
    p = pump[rows]
    same_pump = p[1:] == p[:-1]
    for ch, spec in fleet.channels.items():
        if spec.stuck_after is None and spec.spike_ratio is None:
            continue
        v = block.values[ch][rows]
        hit = np.zeros(len(rows), dtype=bool)
        if spec.stuck_after is not None:
            stuck = stuck_in_pumps(v, same_pump, spec.stuck_after)
            reason[rows[stuck]] = code[f"stuck:{ch}"]
            hit |= stuck
        if spec.spike_ratio is not None:
            spiked = spikes_in_pumps(v, same_pump, spec.spike_ratio) & ~hit
            reason[rows[spiked]] = code[f"spike:{ch}"]
            hit |= spiked
        if hit.any():
            rows = rows[~hit]
            p = pump[rows]
            same_pump = p[1:] == p[:-1]
    return reason


def stuck_in_pumps(values: np.ndarray, same_pump: np.ndarray, after: int) -> np.ndarray:
    """:func:`pumpfleet.validation.stuck` of each pump's run of rows at once
    (``same_pump[i]``: row i + 1 is the same pump's as row i)."""
    n = len(values)
    if n == 0:
        return np.zeros(0, dtype=bool)
    same = np.zeros(n, dtype=bool)
    same[1:] = same_pump & (values[1:] == values[:-1])
    run = np.cumsum(~same)
    return np.asarray(same & (np.bincount(run)[run] >= after))


# A sorting network of five (Knuth's nine comparators): after it, a[0] <= ... <= a[4].
_NETWORK = ((0, 1), (3, 4), (2, 4), (2, 3), (0, 3), (0, 2), (1, 4), (1, 3), (1, 2))
# The bound test's margin, far above float rounding (2**-53 per operation): a row it
# passes is no spike however the exact median's test rounds.
_SURE = 1.0 - 2.0**-20


def _clear_of_spikes(values: np.ndarray, same_pump: np.ndarray, ratio: float) -> np.ndarray:
    """Rows that no median of their five can make a spike, found without the median:
    five present positive values of one pump, the centre within ``ratio`` (less a
    margin) of both their least and their greatest. ``|v - m| - ratio * m`` is convex
    in ``m``, so it is no greater at the median, which lies between them."""
    n = len(values)
    sure = np.zeros(n, dtype=bool)
    if n < 5:
        return sure
    # Least and greatest of rows i-2..i+2 for each row i (NaN propagates: a missing
    # value decides nothing), in place where it can be.
    lo = np.minimum(values[:-1], values[1:])
    hi = np.maximum(values[:-1], values[1:])
    lo = np.minimum(lo[:-2], lo[2:])[:-1]
    hi = np.maximum(hi[:-2], hi[2:])[:-1]
    np.minimum(lo, values[4:], out=lo)
    np.maximum(hi, values[4:], out=hi)
    one = same_pump[:-1] & same_pump[1:]
    ok = one[:-2] & one[2:]
    centre = values[2:-2]
    limit = ratio * _SURE
    gap = np.empty_like(lo)
    bound = np.empty_like(lo)
    with np.errstate(invalid="ignore"):
        ok &= lo > 0
        ok &= hi < np.inf
        for end in (lo, hi):
            np.abs(np.subtract(centre, end, out=gap), out=gap)
            ok &= gap <= np.multiply(end, limit, out=bound)
    sure[2:-2] = ok
    return sure


def spikes_in_pumps(values: np.ndarray, same_pump: np.ndarray, ratio: float) -> np.ndarray:
    """:func:`pumpfleet.validation.spikes` of each pump's run of rows at once: the
    centred median of five (of three or four at a pump's ends, or where neighbours are
    missing; none below three), as pandas' rolling median gives it, bit for bit. The
    median is sorted out only for the rows a bound test cannot clear (a spike, a pump's
    ends, missing neighbours)."""
    n = len(values)
    out = np.zeros(n, dtype=bool)
    rows = np.flatnonzero(~_clear_of_spikes(values, same_pump, ratio))
    if not len(rows):
        return out
    # Neighbours at -2..2 within the pump; a missing one is +inf, which sorts last, so
    # the k present values are the k smallest. Padded by two on each side.
    padded = np.full(n + 4, np.nan)
    padded[2:-2] = values
    linked = np.zeros(n + 3, dtype=bool)  # linked[i + 2]: rows i and i + 1 are one pump's
    linked[2 : n + 1] = same_pump
    at = rows + 2
    own = padded[at]
    present = ~np.isnan(own)
    count = present.astype(np.int8)
    lanes = []
    for d, path in ((-2, (-1, -2)), (-1, (-1,)), (1, (0,)), (2, (0, 1))):
        ok = ~np.isnan(padded[at + d])
        for step in path:
            ok &= linked[at + step]
        count += ok
        lanes.append(np.where(ok, padded[at + d], np.inf))
    a = [lanes[0], lanes[1], np.where(present, own, np.inf), lanes[2], lanes[3]]
    for i, j in _NETWORK:
        lo = np.minimum(a[i], a[j])
        np.maximum(a[i], a[j], out=a[j])
        a[i] = lo
    with np.errstate(invalid="ignore"):
        med = np.where(count == 5, a[2], np.where(count == 4, (a[2] + a[1]) / 2, a[1]))
        med[count < 3] = np.nan
        out[rows] = np.abs(own - med) > ratio * np.abs(med)
    return out


def to_ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def from_ipc(blobs: pa.Array | pa.ChunkedArray) -> list[pa.Table]:
    """The tables in a column of IPC blobs; empty blobs (no table) are skipped."""
    chunks = blobs.chunks if isinstance(blobs, pa.ChunkedArray) else [blobs]
    return [
        pa.ipc.open_stream(b.as_buffer()).read_all()
        for chunk in chunks
        for b in chunk
        if b.is_valid and len(b.as_buffer())
    ]


def compact_strings(table: pa.Table) -> pa.Table:
    """The columns that repeat a few values (the source ``path``, ``site``,
    ``pump_class``) as dictionaries, so that the shuffle moves an index per row rather
    than the text; the pump id, which the shuffle sorts on, stays as it is."""
    for name in (PATH, "site", "pump_class"):
        i = table.schema.get_field_index(name)
        if i >= 0 and not pa.types.is_dictionary(table.schema.field(i).type):
            table = table.set_column(i, name, pc.dictionary_encode(table.column(i)))
    return table
