"""What a validated block yields besides its windows, as array functions: rows per
source file and reason, each (pump, class)'s statistics and settings sample, its good
readings (what windows are cut from) and, once regimes are fitted, its per-regime
statistics. Each returns the table ``pumpfleet.ingestion`` and ``pumpfleet.feature_specs``
read, in the columns the per-pump reference functions gave them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from pumpfleet.features import nearest_regime
from pumpfleet.ingest_block import Block, Codes, codes_of
from pumpfleet.regimes import merge_statistics, sample_rows

MS = pa.timestamp("ms", tz="UTC")


def counts_table(block: Block, reason: np.ndarray, names: Sequence[str | None]) -> pa.Table:
    """Rows per source file and reason (null: good)."""
    n_reasons = len(names)
    key = block.path.codes.astype(np.int64) * n_reasons + reason
    per = np.bincount(key, minlength=len(block.path.names) * n_reasons)
    seen = np.flatnonzero(per)
    path, why = np.divmod(seen, n_reasons)
    return pa.table(
        {
            "path": pa.array(block.path.names[path].tolist(), pa.string()),
            "reason": pa.array([names[i] for i in why], pa.string()),
            "rows": pa.array(per[seen], pa.int64()),
        }
    )


@dataclass
class Groups:
    """Rows grouped by (pump, class), each group's rows in their order (time)."""

    ids: np.ndarray  # per row: its group
    pump: np.ndarray  # per group: pump code
    cls: np.ndarray  # per group: class code

    def __len__(self) -> int:
        return len(self.pump)


def groups(pump: np.ndarray, cls: np.ndarray) -> Groups:
    """The (pump, class) groups of rows sorted by pump (and, within a pump, by time),
    numbered in order of appearance where each group's rows are contiguous."""
    n = len(pump)
    if n == 0:
        return Groups(np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0, np.int32))
    change = np.ones(n, dtype=bool)
    change[1:] = (pump[1:] != pump[:-1]) | (cls[1:] != cls[:-1])
    starts = np.flatnonzero(change)
    seg = np.cumsum(change) - 1
    key = pump[starts].astype(np.int64) * (int(cls.max()) + 1) + cls[starts]
    uniq, of_seg = np.unique(key, return_inverse=True)  # a pump with interleaved classes
    if len(uniq) == len(starts):
        of_seg = np.arange(len(starts))
        first = starts
    else:
        first = starts[np.unique(of_seg, return_index=True)[1]]
    return Groups(of_seg[seg], pump[first], cls[first])


class _Counts:
    """Rows per key, counted once for every column that misses no value."""

    def __init__(self, key: np.ndarray, m: int) -> None:
        self.key, self.m = key, m
        self._rows: np.ndarray | None = None

    @property
    def rows(self) -> np.ndarray:
        if self._rows is None:
            self._rows = np.bincount(self.key, minlength=self.m).astype(np.float64)
        return self._rows


def _sums(
    counts: _Counts, v: np.ndarray, empty_mean: float | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per key in ``range(m)``: count of values, mean (``empty_mean`` where none; None:
    NaN) and sum of squared deviations, summed in row order. Where no value is missing
    the masks are left out: the sums are the same, bit for bit."""
    key, m = counts.key, counts.m
    seen = ~np.isnan(v)
    whole = bool(seen.all())
    n = counts.rows if whole else np.bincount(key, weights=seen, minlength=m)
    total = np.bincount(key, weights=v if whole else np.where(seen, v, 0.0), minlength=m)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / n if empty_mean is None else np.where(n > 0, total / n, empty_mean)
    dev = v - mean[key] if whole else np.where(seen, v - mean[key], 0.0)
    m2 = np.bincount(key, weights=dev * dev, minlength=m)
    return n, mean, m2


def stats_table(
    pump_names: np.ndarray,
    cls_names: np.ndarray,
    g: Groups,
    ms: np.ndarray,
    values: Mapping[str, np.ndarray],
    channels: Sequence[str],
) -> pa.Table:
    """Per (pump, class) of the good rows: their number, first and last time (ms), and
    per channel the count of values, their mean and their sum of squared deviations
    (which merge exactly across pumps)."""
    m = len(g)
    out: dict[str, object] = {
        "pump_id": pa.array(pump_names[g.pump].tolist(), pa.string()),
        "pump_class": pa.array(cls_names[g.cls].tolist(), pa.string()),
        "rows": np.bincount(g.ids, minlength=m).astype(np.int64),
    }
    t_min = np.full(m, np.iinfo(np.int64).max)
    t_max = np.full(m, np.iinfo(np.int64).min)
    if _interleaved(g):
        np.minimum.at(t_min, g.ids, ms)
        np.maximum.at(t_max, g.ids, ms)
    else:
        _ends(t_min, t_max, g, ms)
    out["t_min"], out["t_max"] = t_min, t_max
    counts = _Counts(g.ids, m)
    for c in channels:  # per group: count, mean (NaN where none) and m2
        n, mean, m2 = _sums(counts, values[c], None)
        out |= {f"n:{c}": n.astype(np.int64), f"mean:{c}": mean, f"m2:{c}": m2}
    return pa.table(out)


def _interleaved(g: Groups) -> bool:
    return bool(np.any(g.ids[1:] < g.ids[:-1]))


def _ends(t_min: np.ndarray, t_max: np.ndarray, g: Groups, ms: np.ndarray) -> None:
    """First and last time of groups whose rows are contiguous and in time order."""
    if not len(g.ids):
        return
    change = np.flatnonzero(g.ids[1:] != g.ids[:-1])
    t_min[g.ids[np.r_[0, change + 1]]] = ms[np.r_[0, change + 1]]
    t_max[g.ids[np.r_[change, len(ms) - 1]]] = ms[np.r_[change, len(ms) - 1]]


def sample_table(
    pump_names: np.ndarray,
    cls_names: np.ndarray,
    g: Groups,
    values: Mapping[str, np.ndarray],
    settings: Sequence[str],
) -> pa.Table:
    """Evenly spaced rows (in time order) of each (pump, class)'s good readings: its
    ``pump_id``, ``pump_class`` and settings (as float32, as the windows hold them,
    then float64), which the regimes are learned from."""
    order = np.argsort(g.ids, kind="stable") if _interleaved(g) else None
    sizes = np.bincount(g.ids, minlength=len(g))
    starts = (np.cumsum(sizes) - sizes).astype(np.int64)
    picks = [s + sample_rows(int(n)) for s, n in zip(starts, sizes, strict=True)]
    rows = np.concatenate(picks) if picks else np.zeros(0, np.int64)
    if order is not None:
        rows = order[rows]
    owner = g.ids[rows]
    cols: dict[str, object] = {
        "pump_id": pa.array(pump_names[g.pump[owner]].tolist(), pa.string()),
        "pump_class": pa.array(cls_names[g.cls[owner]].tolist(), pa.string()),
    }
    for c in settings:
        cols[c] = values[c][rows].astype(np.float32).astype(np.float64)
    return pa.table(cols)


def readings_table(
    block: Block, rows: np.ndarray, layout: Sequence[str], keep_float64: bool = False
) -> pa.Table:
    """The good rows' keys, time (ms) and ``layout`` values as float32 (what a window
    holds), in validation order: what windows and regime statistics are made from."""

    def dictionary(c: Codes) -> pa.Array:
        return pa.DictionaryArray.from_arrays(
            pa.array(c.codes[rows], pa.int32()), pa.array(c.names.tolist(), pa.string())
        )

    cols: dict[str, pa.Array] = {
        "pump_id": dictionary(block.pump),
        "pump_class": dictionary(block.cls),
        "site": dictionary(block.site),
        "timestamp": pa.array(block.ms[rows], pa.int64()).cast(MS),
    }
    for c in layout:
        v = block.values[c][rows]
        cols[c] = pa.array(v if keep_float64 else v.astype(np.float32))
    return pa.table(cols)


@dataclass
class Readings:
    """A readings table (:func:`readings_table`) as arrays."""

    pump: Codes
    cls: Codes
    site: Codes
    ms: np.ndarray
    table: pa.Table

    def column(self, name: str, dtype: type = np.float32) -> np.ndarray:
        return np.asarray(self.table.column(name).to_numpy(), dtype=dtype)


def decode_readings(table: pa.Table) -> Readings:
    ms = table.column("timestamp").cast(pa.int64()).to_numpy()
    return Readings(
        codes_of(table.column("pump_id")),
        codes_of(table.column("pump_class")),
        codes_of(table.column("site")),
        np.asarray(ms, dtype=np.int64),
        table,
    )


def _of_rows(r: Readings, name: str, rows: np.ndarray | None) -> np.ndarray:
    """A column's values at ``rows`` (None: all), float32 as windows hold them, as float64."""
    v = r.column(name)
    return (v if rows is None else v[rows]).astype(np.float64)


def _regimes(found: np.ndarray, center: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """:func:`pumpfleet.features.nearest_regime` of each row, found once per run of
    identical settings (setpoints change seldom; a row with a missing one is a run of
    its own, NaN being unequal to itself): the same regime, row by row."""
    change = np.ones(len(found), dtype=bool)
    change[1:] = (found[1:] != found[:-1]).any(axis=1)
    starts = np.flatnonzero(change)
    if len(starts) == len(found):
        return nearest_regime(found, center, scale)
    return nearest_regime(found[starts], center, scale)[np.cumsum(change) - 1]


def regime_stats_frame(
    readings: pa.Table,
    fits: Mapping[str, tuple[np.ndarray, np.ndarray]],
    channels: Sequence[str],
    settings: Sequence[str],
) -> pd.DataFrame:
    """Per class with regimes (``fits``: class → centres, scale), pump, regime and
    channel: the count, mean and m2 of the good readings (float32, as windows hold them),
    one row per (pump, class, regime) for every regime of the class."""
    r = decode_readings(readings)
    g = groups(r.pump.codes, r.cls.codes)
    frames = []
    for cls_code, cls in enumerate(r.cls.names):
        if str(cls) not in fits or not (g.cls == cls_code).any():
            continue
        center, scale = fits[str(cls)]
        k = len(center)
        of_class = g.cls[g.ids] == cls_code
        rows = None if of_class.all() else np.flatnonzero(of_class)
        found = np.stack([_of_rows(r, s, rows) for s in settings], axis=1)
        regime = _regimes(found, center, scale)
        local = np.unique(g.ids if rows is None else g.ids[rows], return_inverse=True)
        pumps, slot = local[0], local[1]
        key = np.where(regime >= 0, slot * k + regime, len(pumps) * k)
        m = len(pumps) * k + 1
        out: dict[str, object] = {
            "pump_id": np.repeat(r.pump.names[g.pump[pumps]], k).astype(str),
            "pump_class": str(cls),
            "regime": np.tile(np.arange(k), len(pumps)),
        }
        counts = _Counts(key, m)
        for c in channels:
            n, mean, m2 = _sums(counts, _of_rows(r, c, rows), 0.0)
            out |= {f"n:{c}": n[:-1], f"mean:{c}": mean[:-1], f"m2:{c}": m2[:-1]}
        frames.append(pd.DataFrame(out))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def class_regime_statistics(
    stats: pd.DataFrame, splits: Mapping[str, str], channels: Sequence[str]
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """:func:`pumpfleet.feature_specs.class_regime_statistics`, bit for bit, without a
    pandas group per pump: per class, the training pumps' (count, mean, m2) ``[k, C]``
    arrays, in pump id order, merged by :func:`pumpfleet.regimes.merge_statistics`."""
    out: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    if stats.empty:
        return out
    train = stats[stats["pump_id"].map(splits).fillna("train") == "train"]
    for cls, part in train.groupby("pump_class", sort=True):
        k = int(part["regime"].max()) + 1
        pumps, slot = np.unique(part["pump_id"].to_numpy(dtype=str), return_inverse=True)
        regime = part["regime"].to_numpy(dtype=int)
        arrays = []
        for prefix in ("n", "mean", "m2"):
            a = np.zeros((len(pumps), k, len(channels)))
            a[slot, regime] = part[[f"{prefix}:{c}" for c in channels]].to_numpy(dtype=np.float64)
            arrays.append(a)
        out[str(cls)] = merge_statistics(list(zip(*arrays, strict=True)))
    return out
