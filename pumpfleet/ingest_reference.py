"""The reference: the ingest's per-pump pass as it was written first, in pandas, one
pump at a time (``validate_pump``, ``make_windows``). The vectorised core
(``pumpfleet.ingest_parts`` over ``pumpfleet.ingest_block``, ``block_stats`` and
``block_windows``) is proven equal to it, bit for bit, by ``tests/unit/test_ingest_block``
and ``python -m benchmarks.ingest``; nothing in a job calls it.

What one pass over a pump's rows yields, as plain functions that the ingest job mapped.

Validation needs a pump's rows together, and so does windowing, so the job groups the
readings by pump once: each pump comes out as one row of small Arrow tables in IPC form
(its row counts per file and reason, the statistics of its good readings per class, the
good readings that its windows are cut from, and its quarantined rows). The splits, which
need every pump, are then decided from those parts (``pumpfleet.ingestion``,
``pumpfleet.feature_specs``), and the windows are cut as they are written: six times the
size of the readings they come from, they are never held.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from pumpfleet.features import nearest_regime
from pumpfleet.ingest_block import PATH, compact_strings, from_ipc, to_ipc  # noqa: F401
from pumpfleet.regimes import regime_statistics, sample_rows
from pumpfleet.schema import FleetSchema
from pumpfleet.validation import REASON, validate_pump
from pumpfleet.windows import WindowConfig, make_windows, window_schema

_KEYS = ("pump_id", "pump_class", "site")


def _counts(checked: pd.DataFrame, bad: np.ndarray) -> pa.Table:
    """Rows per source file and reason (null: good)."""
    paths = checked[PATH].astype("category")  # one already, from compact_paths
    per_path = np.bincount(paths.cat.codes.to_numpy()[~bad], minlength=len(paths.cat.categories))
    seen = np.flatnonzero(per_path)
    categories = list(paths.cat.categories)
    names = [str(categories[i]) for i in seen]
    reasons: list[str | None] = [None] * len(seen)
    rows = [int(n) for n in per_path[seen]]
    if bad.any():
        quarantined = checked[bad].groupby([PATH, REASON], observed=True).size()
        names += [str(p) for p, _ in quarantined.index]
        reasons += [str(r) for _, r in quarantined.index]
        rows += [int(n) for n in quarantined.to_numpy()]
    return pa.table(
        {
            "path": pa.array(names, pa.string()),
            "reason": pa.array(reasons, pa.string()),
            "rows": pa.array(rows, pa.int64()),
        }
    )


def _stats(pump_id: str | None, good: pd.DataFrame, chans: Sequence[str]) -> pa.Table:
    """Per class of the good rows: their number, and per channel the count of values,
    their mean and their sum of squared deviations (which merge exactly across pumps)."""
    classes = good["pump_class"]
    values = good[list(chans)].to_numpy(dtype=float, na_value=np.nan)
    ms = pd.to_datetime(good["timestamp"], utc=True).dt.as_unit("ms").astype("int64").to_numpy()
    out: dict[str, list[object]] = {
        "pump_id": [],
        "pump_class": [],
        "rows": [],
        "t_min": [],
        "t_max": [],
    }
    for c in chans:
        out |= {f"n:{c}": [], f"mean:{c}": [], f"m2:{c}": []}
    for cls in sorted(str(c) for c in pd.unique(classes)):
        of_class = (classes == cls).to_numpy()
        v = values[of_class]
        seen = ~np.isnan(v)
        n = seen.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(seen, v, 0.0).sum(axis=0) / n
        m2 = np.where(seen, (v - mean) ** 2, 0.0).sum(axis=0)
        out["pump_id"].append(pump_id)
        out["pump_class"].append(cls)
        out["rows"].append(len(v))
        out["t_min"].append(int(ms[of_class].min()))
        out["t_max"].append(int(ms[of_class].max()))
        for i, c in enumerate(chans):
            out[f"n:{c}"].append(int(n[i]))
            out[f"mean:{c}"].append(float(mean[i]))
            out[f"m2:{c}"].append(float(m2[i]))
    return pa.table(out)


def _dictionary(values: pd.Series) -> pa.Array:
    codes, uniques = pd.factorize(values)
    return pa.DictionaryArray.from_arrays(codes.astype(np.int32), pa.array(uniques, pa.string()))


def _readings(good: pd.DataFrame, columns: Sequence[str]) -> bytes:
    """What windowing reads of the good rows (channels and settings). Float32 is what the
    windows hold, so the cast here is the one windowing would make."""
    if good.empty:
        return b""
    cols: dict[str, pa.Array] = {k: _dictionary(good[k]) for k in _KEYS}
    cols["timestamp"] = pa.array(good["timestamp"])
    for c in columns:
        cols[c] = pa.array(good[c].to_numpy(dtype=np.float32, na_value=np.nan))
    return to_ipc(pa.table(cols))


def settings_sample(good: pd.DataFrame, settings: Sequence[str]) -> pd.DataFrame:
    """Evenly spaced rows (in time order) of each class's good readings of one pump: its
    ``pump_id``, ``pump_class`` and settings, which the regimes are learned from."""
    parts = []
    for _, rows in good.groupby("pump_class", observed=True, sort=True):
        rows = rows.sort_values("timestamp", kind="stable")
        parts.append(rows.iloc[sample_rows(len(rows))][["pump_id", "pump_class", *settings]])
    if not parts:
        return pd.DataFrame(columns=["pump_id", "pump_class", *settings])
    out = pd.concat(parts)
    for k in ("pump_id", "pump_class"):
        out[k] = out[k].astype(str)
    for c in settings:
        out[c] = out[c].to_numpy(dtype=np.float32, na_value=np.nan).astype(np.float64)
    return out.reset_index(drop=True)


def _in_file_order(df: pd.DataFrame, files: Sequence[str]) -> pd.DataFrame:
    """The rows in the order of their files in ``files`` (stable within a file): of two
    rows at one timestamp, validation keeps the first, which must not depend on the
    order in which the shuffle happened to gather them (it varied from run to run)."""
    paths = df[PATH].astype("category")
    rank = {p: i for i, p in enumerate(files)}
    of_code = np.array([rank.get(str(p), len(files)) for p in paths.cat.categories])
    key = of_code[paths.cat.codes.to_numpy()]
    if len(key) < 2 or bool(np.all(key[1:] >= key[:-1])):
        return df
    return df.iloc[np.argsort(key, kind="stable")]


def pump_parts(df: pd.DataFrame, fleet: FleetSchema, files: Sequence[str]) -> pa.Table:
    """One pump's rows in (with their source ``path``, one of ``files``), one row out:
    ``pump_id`` and the ``counts``, ``stats``, ``readings`` and ``quarantine`` tables
    (IPC)."""
    checked = validate_pump(_in_file_order(df, files), fleet)
    bad = checked[REASON].notna().to_numpy()
    good = checked[~bad] if bad.any() else checked
    first = df["pump_id"].iloc[0]
    pump_id = None if pd.isna(first) else str(first)
    quarantine = b""
    if bad.any():
        rows = checked[bad].rename(columns={PATH: "source_file"})
        for name in ("source_file", "site", "pump_class"):  # plain strings in the table
            if isinstance(rows[name].dtype, pd.CategoricalDtype):
                rows[name] = rows[name].astype(object).where(rows[name].notna(), None)
        quarantine = to_ipc(pa.Table.from_pandas(rows, preserve_index=False))
    return pa.table(
        {
            "pump_id": pa.array([pump_id], pa.string()),
            "counts": pa.array([to_ipc(_counts(checked, bad))], pa.binary()),
            "stats": pa.array([to_ipc(_stats(pump_id, good, fleet.channel_names))], pa.binary()),
            "readings": pa.array(
                [_readings(good, [*fleet.channel_names, *fleet.settings])], pa.binary()
            ),
            "sample": pa.array(
                [to_ipc(pa.Table.from_pandas(settings_sample(good, fleet.settings)))],
                pa.binary(),
            ),
            "quarantine": pa.array([quarantine], pa.binary()),
        }
    )


def windows_of(
    batch: pa.Table,
    failures: Mapping[str, Sequence[int]],
    splits: Mapping[str, str],
    cfg: WindowConfig,
    channels: Sequence[str],
    cutoff_ms: int | None = None,
) -> pa.Table:
    """The labelled windows of a batch of pumps' ``readings`` (``channels``: what a window
    holds per step, channels then settings)."""
    tables = [
        make_windows(t.to_pandas(), failures, splits, cfg, channels, cutoff_ms)
        for t in from_ipc(batch.column("readings"))
    ]
    return pa.concat_tables(tables) if tables else window_schema(cfg, len(channels)).empty_table()


def pump_regime_statistics(
    readings: pd.DataFrame,
    fits: Mapping[str, tuple[np.ndarray, np.ndarray]],
    channels: Sequence[str],
    settings: Sequence[str],
) -> pd.DataFrame:
    """Per class with regimes (``fits``: class → centres, scale), regime and channel: the
    count, mean and m2 of one pump's good readings, one row per (class, regime)."""
    rows: list[dict[str, object]] = []
    for cls, part in readings.groupby("pump_class", observed=True, sort=True):
        if str(cls) not in fits:
            continue
        center, scale = fits[str(cls)]
        regime = nearest_regime(part[list(settings)].to_numpy(dtype=np.float64), center, scale)
        values = part[list(channels)].to_numpy(dtype=np.float64, na_value=np.nan)
        n, mean, m2 = regime_statistics(values, regime, len(center))
        pump_id = str(part["pump_id"].iloc[0])
        for r in range(len(center)):
            row: dict[str, object] = {"pump_id": pump_id, "pump_class": str(cls), "regime": r}
            for i, c in enumerate(channels):
                row |= {f"n:{c}": n[r, i], f"mean:{c}": mean[r, i], f"m2:{c}": m2[r, i]}
            rows.append(row)
    return pd.DataFrame(rows)


def regime_statistics_of(
    batch: pa.Table,
    fits: Mapping[str, tuple[np.ndarray, np.ndarray]],
    channels: Sequence[str],
    settings: Sequence[str],
) -> pa.Table:
    """:func:`pump_regime_statistics` of a batch of pumps' ``readings``, as one IPC blob
    per pump (column ``regime_stats``)."""
    blobs = []
    for t in from_ipc(batch.column("readings")):
        df = pump_regime_statistics(t.to_pandas(), fits, channels, settings)
        blobs.append(to_ipc(pa.Table.from_pandas(df, preserve_index=False)) if len(df) else b"")
    return pa.table({"regime_stats": pa.array(blobs, pa.binary())})


def quarantined_rows(batch: pa.Table) -> pa.Table:
    tables = from_ipc(batch.column("quarantine"))
    return pa.concat_tables(tables, promote_options="permissive") if tables else pa.table({})
