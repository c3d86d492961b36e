"""The baseline of ``benchmarks.ingest``: the ingest transformation written plainly, in one
process with pandas and pyarrow, the whole fleet in memory, pump after pump.

    python -m benchmarks.ingest_single DATASET OUT   # prints one JSON line
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from pumpfleet.feature_specs import fit_class_regimes, specs_from_statistics
from pumpfleet.features import nearest_regime
from pumpfleet.ingest_reference import settings_sample
from pumpfleet.regimes import regime_statistics
from pumpfleet.schema import EventType, read_fleet_schema
from pumpfleet.validation import REASON, validate_pump
from pumpfleet.windows import SPLITS, WindowConfig, assign_splits, make_windows, time_cutoff


def _failures(source: Path) -> dict[str, list[int]]:
    ev = pd.read_parquet(source / "events")
    ev = ev[ev["event_type"] == EventType.FAILURE]
    ms = ev["timestamp"].dt.as_unit("ms").astype("int64")
    out: dict[str, list[int]] = {}
    for pump, ts in zip(ev["pump_id"], ms, strict=True):
        out.setdefault(str(pump), []).append(int(ts))
    return out


def single_process(source: Path, out: Path, cfg: WindowConfig) -> dict[str, Any]:
    """Read → validate per pump → good / bad → per-class statistics of the training
    split → windows per pump → Parquet partitioned by class. Returns what it counted,
    the specs' statistics and the seconds per stage."""
    stages: dict[str, float] = {}
    t = time.perf_counter()

    def stage(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        stages[name] = round(now - t, 2)
        t = now

    fleet = read_fleet_schema(str(source))
    cfg = cfg.model_copy(
        update={"interval_seconds": cfg.interval_seconds or fleet.interval_seconds}
    )
    readings = pads.dataset(source / "readings", format="parquet", partitioning="hive")
    df = readings.to_table().to_pandas()
    rows_in = len(df)
    stage("read")
    checked = [validate_pump(g, fleet) for _, g in df.groupby("pump_id", sort=False, dropna=False)]
    del df
    stage("validate")
    bad = pd.concat([c[c[REASON].notna()] for c in checked])
    good = [c[c[REASON].isna()].drop(columns=[REASON]) for c in checked]
    del checked
    by_class: dict[str, list[str]] = {}
    for g in good:
        for cls, pump in g[["pump_class", "pump_id"]].drop_duplicates().itertuples(index=False):
            by_class.setdefault(str(cls), []).append(str(pump))
    splits = assign_splits(by_class, cfg.val_fraction, cfg.holdout_fraction)
    chans = list(fleet.channel_names)
    settings = list(fleet.settings)
    cutoff = time_cutoff(
        min(int(g["timestamp"].min().value // 1_000_000) for g in good if len(g)),
        max(int(g["timestamp"].max().value // 1_000_000) for g in good if len(g)),
        cfg,
    )
    train = pd.concat(
        [
            g[["pump_class", *chans, *settings]]
            for g in good
            if splits.get(str(g["pump_id"].iloc[0])) == "train"
        ]
    )
    stats = train.groupby("pump_class")[chans].agg(["mean", "std"])
    flat = pd.DataFrame({"pump_class": stats.index.astype(str)})
    for c in chans:
        flat[f"mean({c})"] = stats[(c, "mean")].to_numpy()
        flat[f"std({c})"] = stats[(c, "std")].to_numpy()
    fits = (
        fit_class_regimes(
            pd.concat([settings_sample(g, settings) for g in good if len(g)]), splits, settings
        )
        if cfg.regimes
        else {}
    )
    regime_stats = {}
    for cls, fit in fits.items():
        rows = train[train["pump_class"] == cls]
        # float32, as the windows hold them: the regimes are found the same way
        found = rows[settings].to_numpy(dtype=np.float32).astype(np.float64)
        regime = nearest_regime(found, fit.center, fit.scale)
        values = rows[chans].to_numpy(dtype=np.float32).astype(np.float64)
        n, mean, m2 = regime_statistics(values, regime, len(fit.center))
        with np.errstate(invalid="ignore", divide="ignore"):
            std = np.where(n > 1, np.sqrt(m2 / (n - 1)), np.nan)
        regime_stats[cls] = (n, mean, std)
    del train
    specs = specs_from_statistics(flat, cfg, fleet, fits, regime_stats)
    stage("splits_stats")
    failures = _failures(source)
    windows = pa.concat_tables(
        [make_windows(g, failures, splits, cfg, [*chans, *settings], cutoff) for g in good]
    )
    stage("windows")
    pq.write_to_dataset(windows, out / "windows", partition_cols=["pump_class"])
    stage("write")
    counts = windows.group_by(["pump_class", "split"]).aggregate([([], "count_all")]).to_pandas()
    n = counts.set_index(["pump_class", "split"])["count_all"]
    return {
        "rows_in": rows_in,
        "rows_valid": rows_in - len(bad),
        "rows_quarantined": len(bad),
        "quarantine_reasons": {str(k): int(v) for k, v in bad[REASON].value_counts().items()},
        "pumps": len(splits),
        "windows": {c: {s: int(n.get((c, s), 0)) for s in SPLITS} for c in sorted(specs)},
        "specs": specs,
        "stages": stages,
    }


def main(argv: list[str] | None = None) -> None:
    source, out = (Path(a) for a in (argv if argv is not None else sys.argv[1:]))
    result = single_process(source, out, WindowConfig())
    result["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB
    print(json.dumps(result))


if __name__ == "__main__":
    main()
