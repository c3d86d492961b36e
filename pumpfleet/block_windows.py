"""Windows and labels as array functions over a block of whole pumps' good readings
(:func:`pumpfleet.block_stats.readings_table`): every pump's window ends at once, their
labels from the failures by one sorted search, and the windows' values by one gather
from a sliding view of the block. The rules are :func:`pumpfleet.windows.make_windows`'s
(the reference these are proven equal to), and the span rule is
:func:`pumpfleet.features.max_span_ms`, the one the device cuts by.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields

import numpy as np
import pyarrow as pa

from pumpfleet.block_stats import Readings, decode_readings
from pumpfleet.features import max_span_ms
from pumpfleet.windows import MS_PER_HOUR, WindowConfig, window_schema

_SPLITS = ("train", "val", "holdout", "future")


def _strings(codes: np.ndarray, names: Sequence[str] | np.ndarray) -> pa.Array:
    dictionary = pa.DictionaryArray.from_arrays(
        pa.array(codes, pa.int32()), pa.array(list(names), pa.string())
    )
    return dictionary.cast(pa.string())


def _next_failure(
    seg: np.ndarray, end_ts: np.ndarray, failures: Sequence[np.ndarray], cap_ms: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per window end (of segment ``seg``): whether a failure of its pump follows at or
    after it, and the time to it (ms). Failures far beyond every end are moved nearer,
    which leaves the capped labels as they were and the keys in range."""
    if not len(end_ts):
        return np.zeros(0, dtype=bool), np.zeros(0, dtype=np.int64)
    lo = int(end_ts.min()) - 1
    hi = int(end_ts.max()) + math.ceil(cap_ms) + 1
    f_seg = np.repeat(np.arange(len(failures)), [len(f) for f in failures])
    f_t = np.clip(np.concatenate([*failures, np.zeros(0, np.int64)]), lo, hi)
    span = hi - lo + 1
    if (len(failures) + 1) * span < 2**62:
        f_key = f_seg * span + (f_t - lo)
        e_key = seg * span + (end_ts - lo)
        idx = np.searchsorted(f_key, e_key, side="left")
    else:  # pragma: no cover - centuries of milliseconds over millions of pumps
        idx = np.zeros(len(end_ts), dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum([len(f) for f in failures])])
        for s in np.unique(seg):
            at = seg == s
            idx[at] = offsets[s] + np.searchsorted(f_t[offsets[s] : offsets[s + 1]], end_ts[at])
    safe = np.minimum(idx, max(len(f_t) - 1, 0))
    has = (idx < len(f_t)) & (f_seg[safe] == seg) if len(f_t) else np.zeros(len(seg), bool)
    to_failure = np.where(has, f_t[safe] - end_ts, 0) if len(f_t) else np.zeros(len(seg))
    return has, to_failure


def _cut(
    readings: pa.Table,
    failures: Mapping[str, Sequence[int]],
    splits: Mapping[str, str],
    cfg: WindowConfig,
    channels: Sequence[str],
    cutoff_ms: int | None = None,
) -> tuple[Cut, Readings, np.ndarray] | None:
    """Where a block's windows end and their labels, as
    :func:`pumpfleet.windows.make_windows` finds them per pump; None: no window."""
    r = decode_readings(readings)
    n, w = len(r.ms), cfg.window
    if n < w:
        return None
    pump = r.pump.codes
    change = np.ones(n, dtype=bool)
    change[1:] = pump[1:] != pump[:-1]
    starts = np.flatnonzero(change)
    lengths = np.diff(np.append(starts, n))
    per = np.where(lengths >= w, (lengths - w) // cfg.stride + 1, 0)
    seg = np.repeat(np.arange(len(starts)), per)
    j = np.arange(len(seg)) - np.repeat(np.cumsum(per) - per, per)
    ends = starts[seg] + (w - 1) + cfg.stride * j
    ts = r.ms
    end_ts = ts[ends]
    ok = (end_ts - ts[ends - (w - 1)]) <= max_span_ms(w, cfg.interval_seconds or 3600.0)
    names = [str(p) for p in r.pump.names[pump[starts]]]
    fails = [np.sort(np.asarray(failures.get(p, ()), dtype=np.int64)) for p in names]
    cap_ms = cfg.rul_cap_hours * MS_PER_HOUR
    has, to_failure = _next_failure(seg, end_ts, fails, cap_ms)
    rul_ms = np.where(has, np.minimum(to_failure, cap_ms), cap_ms)
    last = ts[starts + lengths - 1]
    known = has | ((last[seg] - end_ts) >= cap_ms)
    keep = np.flatnonzero(ok & known)
    if not len(keep):
        return None
    ends, end_ts, seg = ends[keep], end_ts[keep], seg[keep]
    rul_h = (rul_ms[keep] / MS_PER_HOUR).astype(np.float32)
    split = np.array([_SPLITS.index(splits.get(p, "train")) for p in names], dtype=np.int32)
    split_of = split[seg]
    if cutoff_ms is not None:
        split_of = np.where(
            (split_of != _SPLITS.index("holdout")) & (end_ts > cutoff_ms), 3, split_of
        )
    values = np.column_stack([r.column(c) for c in channels]).astype(np.float32, copy=False)
    first = starts[seg]
    cut = Cut(pump[first], r.cls.codes[first], r.site.codes[first], split_of, end_ts, rul_h, ends)
    return cut, r, values


@dataclass
class Cut:
    """Per window: its pump's, class's and site's codes, its split (into SPLITS), end
    time (ms), RUL (hours) and last row in the block."""

    pump: np.ndarray
    cls: np.ndarray
    site: np.ndarray
    split: np.ndarray
    end_ts: np.ndarray
    rul_h: np.ndarray
    ends: np.ndarray

    def take(self, idx: np.ndarray) -> Cut:
        return Cut(*(getattr(self, f.name)[idx] for f in fields(self)))


def _table(
    cut: Cut, r: Readings, values: np.ndarray, cfg: WindowConfig, schema: pa.Schema
) -> pa.Table:
    """The windows of ``cut`` (``schema``'s columns: ``pump_class`` where it has it),
    their values by one gather from a sliding view of the block's ``values``."""
    w, n_ch = cfg.window, values.shape[1]
    view = np.lib.stride_tricks.sliding_window_view(values, (w, n_ch))
    flat = view[cut.ends - (w - 1), 0].reshape(-1)
    cols = {
        "pump_id": _strings(cut.pump, r.pump.names),
        "pump_class": _strings(cut.cls, r.cls.names),
        "site": _strings(cut.site, r.site.names),
        "split": _strings(cut.split, _SPLITS),
        "end_time": pa.array(cut.end_ts, type=pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
        "rul_hours": pa.array(cut.rul_h, type=pa.float32()),
        "failure_within_horizon": pa.array(
            (cut.rul_h <= cfg.horizon_hours).astype(np.int8), type=pa.int8()
        ),
        "window": pa.FixedSizeListArray.from_arrays(pa.array(flat, type=pa.float32()), w * n_ch),
    }
    return pa.Table.from_arrays([cols[name] for name in schema.names], schema=schema)


def block_windows(
    readings: pa.Table,
    failures: Mapping[str, Sequence[int]],
    splits: Mapping[str, str],
    cfg: WindowConfig,
    channels: Sequence[str],
    cutoff_ms: int | None = None,
) -> pa.Table:
    """The labelled windows of a block of pumps' good readings (``channels``: what a
    window holds per step, channels then settings), as
    :func:`pumpfleet.windows.make_windows` cuts each pump's."""
    schema = window_schema(cfg, len(channels))
    found = _cut(readings, failures, splits, cfg, channels, cutoff_ms)
    return schema.empty_table() if found is None else _table(*found, cfg, schema)


def class_windows(
    readings: pa.Table,
    failures: Mapping[str, Sequence[int]],
    splits: Mapping[str, str],
    cfg: WindowConfig,
    channels: Sequence[str],
    cutoff_ms: int | None = None,
) -> Iterator[tuple[str, pa.Table, dict[str, int]]]:
    """:func:`block_windows` per class: each class's windows without their
    ``pump_class`` column (what a file under ``pump_class=<c>/`` holds) and its windows
    per split."""
    found = _cut(readings, failures, splits, cfg, channels, cutoff_ms)
    if found is None:
        return
    cut, r, values = found
    schema = window_schema(cfg, len(channels))
    schema = schema.remove(schema.get_field_index("pump_class"))
    order = np.argsort(cut.cls, kind="stable")
    bounds = np.flatnonzero(np.diff(cut.cls[order])) + 1
    for idx in np.split(order, bounds):
        part = cut.take(idx)
        per_split = np.bincount(part.split, minlength=len(_SPLITS))
        counts = {s: int(n) for s, n in zip(_SPLITS, per_split, strict=True) if n}
        yield str(r.cls.names[part.cls[0]]), _table(part, r, values, cfg, schema), counts
