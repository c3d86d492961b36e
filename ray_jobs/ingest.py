"""Ingest on Ray Data: validate → quarantine bad rows with reasons → windows and labels
per pump → a feature snapshot (Parquet, partitioned by pump class) with its specs.

    python -m ray_jobs.ingest --source DATASET [--out FEATURES_DIR]
"""

from __future__ import annotations

import argparse
import logging
import time
import uuid
from typing import Any, cast

import pandas as pd
import pyarrow.parquet as pq
import ray
from ray.data.aggregate import Count, Mean, Std
from ray.data.datasource import Partitioning
from ray.data.datasource.partitioning import PartitionStyle

from pumpfleet import storage
from pumpfleet.errors import DataError, InputError
from pumpfleet.features import FeatureSpec
from pumpfleet.inputs import scan
from pumpfleet.schema import EventType, FleetSchema, read_fleet_schema
from pumpfleet.settings import get_settings
from pumpfleet.snapshot import LATEST, MANIFEST, snapshot_id
from pumpfleet.validation import REASON, validate_pump
from pumpfleet.windows import SPLITS, WindowConfig, assign_splits, make_windows
from ray_jobs._ray import cluster_cpus, init_ray
from ray_jobs.cli import run_main

log = logging.getLogger(__name__)


def _rows(df: pd.DataFrame, good: bool, splits: dict[str, str] | None = None) -> pd.DataFrame:
    mask = df[REASON].isna() if good else df[REASON].notna()
    out = df[mask]
    if good:
        out = out.drop(columns=[REASON, "path"])
        if splits is not None:
            out = out.assign(split=out["pump_id"].map(splits).fillna("train"))
    else:
        out = out.rename(columns={"path": "source_file"})
    return out


def _failures(source: str) -> dict[str, list[int]]:
    files = storage.list_files(storage.join(source, "events"), ".parquet")
    out: dict[str, list[int]] = {}
    fs, _ = storage.resolve(source)
    for f in files:
        t = pq.read_table(f, filesystem=fs).to_pandas()
        t = t[t["event_type"] == EventType.FAILURE]
        ms = pd.to_datetime(t["timestamp"], utc=True).dt.as_unit("ms").astype("int64")
        for pump, ts in zip(t["pump_id"], ms, strict=True):
            out.setdefault(str(pump), []).append(int(ts))
    return out


def _specs(
    train_rows: ray.data.Dataset, cfg: WindowConfig, fleet: FleetSchema
) -> dict[str, dict[str, Any]]:
    aggs = [Count()] + [a(c) for c in fleet.channel_names for a in (Mean, Std)]
    stats = train_rows.groupby("pump_class").aggregate(*aggs).to_pandas()
    specs: dict[str, dict[str, Any]] = {}
    for _, row in stats.iterrows():
        cls = str(row["pump_class"])
        chans = [
            c
            for c in fleet.classes.get(cls, ())
            if pd.notna(row[f"std({c})"]) and row[f"std({c})"] > 0
        ]
        if not chans:
            continue
        spec = FeatureSpec(
            pump_class=cls,
            channels=chans,
            window=cfg.window,
            stride=cfg.stride,
            interval_seconds=cfg.interval_seconds or fleet.interval_seconds,
            rul_cap_hours=cfg.rul_cap_hours,
            horizon_hours=cfg.horizon_hours,
            mean=[float(row[f"mean({c})"]) for c in chans],
            std=[float(row[f"std({c})"]) for c in chans],
        )
        specs[cls] = spec.model_dump()
    return specs


def run_ingest(source: str, features_root: str, cfg: WindowConfig) -> dict[str, Any]:
    """Turn a fleet dataset into a feature snapshot; returns the job summary."""
    started = time.monotonic()
    readings_uri = storage.join(source, "readings")
    fleet = read_fleet_schema(source)
    files, rows_in, rejected = scan(readings_uri, fleet)
    if not files:
        if rejected:
            raise DataError(
                f"{readings_uri}: all {len(rejected)} files rejected "
                f"(first: {rejected[0].path}: {rejected[0].reason})"
            )
        raise InputError(f"{readings_uri}: no Parquet files (expected a fleet dataset)")
    for r in rejected:
        log.warning("file rejected: %s: %s", r.path, r.reason)
    fs, path = storage.resolve(readings_uri)
    inputs = [(f, int(fs.get_file_info(f).size or 0)) for f in files]
    inputs += [(f"rejected:{r.path}", 0) for r in rejected]
    if cfg.interval_seconds is None:
        cfg = cfg.model_copy(update={"interval_seconds": fleet.interval_seconds})
    sid = snapshot_id(inputs, {**cfg.model_dump(), "fleet": fleet.model_dump()})
    final = storage.join(features_root, sid)
    if storage.exists(storage.join(final, MANIFEST)):
        log.info("snapshot %s is up to date with %s; nothing to do", sid, source)
        manifest = storage.read_json(storage.join(final, MANIFEST))
        return {**manifest["summary"], "snapshot_id": sid, "up_to_date": True}

    partitions = max(2, cluster_cpus())
    ds = ray.data.read_parquet(
        files,
        filesystem=fs,
        partitioning=Partitioning(PartitionStyle.HIVE, base_dir=path),
        include_paths=True,
    )
    checked = (
        ds.groupby("pump_id", num_partitions=partitions)
        .map_groups(cast(Any, validate_pump), fn_kwargs={"fleet": fleet}, batch_format="pandas")
        .materialize()
    )
    bad = checked.map_batches(_rows, fn_kwargs={"good": False}, batch_format="pandas")
    pumps = (
        checked.map_batches(_rows, fn_kwargs={"good": True}, batch_format="pandas")
        .groupby(["pump_class", "pump_id"])
        .count()
        .to_pandas()
    )
    if pumps.empty:
        raise DataError(f"{source}: no valid readings (all {rows_in} rows quarantined)")
    by_class = pumps.groupby("pump_class")["pump_id"].apply(list).to_dict()
    splits = assign_splits(by_class, cfg.val_fraction, cfg.holdout_fraction)
    good = checked.map_batches(
        _rows, fn_kwargs={"good": True, "splits": splits}, batch_format="pandas"
    ).materialize()
    specs = _specs(good.filter(expr="split == 'train'"), cfg, fleet)
    if not specs:
        raise DataError(f"{source}: no class has training data with varying readings")

    tmp = storage.join(features_root, f".tmp-{sid}-{uuid.uuid4().hex[:8]}")
    wfs, wpath = storage.resolve(storage.join(tmp, "windows"))
    windows = (
        good.groupby("pump_id", num_partitions=partitions)
        .map_groups(
            make_windows,
            fn_kwargs={
                "failures": _failures(source),
                "splits": splits,
                "cfg": cfg,
                "channels": fleet.channel_names,
            },
            batch_format="pandas",
        )
        .materialize()
    )
    windows.write_parquet(wpath, filesystem=wfs, partition_cols=["pump_class"])
    n_bad = bad.count()
    if n_bad:
        qfs, qpath = storage.resolve(storage.join(tmp, "quarantine"))
        bad.write_parquet(qpath, filesystem=qfs)
    n_good = good.count()
    if n_good + n_bad != rows_in:  # pragma: no cover - would be a bug in validation
        raise DataError(f"counts do not reconcile: {rows_in} in, {n_good} good + {n_bad} bad")
    per_file = (
        checked.groupby("path")
        .aggregate(Count(), Count(REASON, ignore_nulls=True, alias_name="quarantined"))
        .to_pandas()
    )
    counts = windows.groupby(["pump_class", "split"]).count().to_pandas()
    per_class = {
        cls: {
            s: int(counts[(counts.pump_class == cls) & (counts.split == s)]["count()"].sum())
            for s in SPLITS
        }
        for cls in sorted(specs)
    }
    reasons = (
        bad.groupby(REASON).count().to_pandas().set_index(REASON)["count()"].to_dict()
        if n_bad
        else {}
    )
    summary = {
        "status": "partial" if rejected else "success",
        "source": str(source),
        "files_read": len(files),
        "files_rejected": [r.as_dict() for r in rejected],
        "rows_in_rejected_files": sum(r.rows or 0 for r in rejected),
        "rows_in": rows_in,
        "rows_valid": n_good,
        "rows_quarantined": n_bad,
        "quarantine_reasons": {str(k): int(v) for k, v in reasons.items()},
        "per_file": {
            str(r["path"]): {"rows": int(r["count()"]), "quarantined": int(r["quarantined"])}
            for _, r in per_file.iterrows()
        },
        "pumps": len(splits),
        "windows": per_class,
        "seconds": round(time.monotonic() - started, 1),
    }
    manifest = {
        "id": sid,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "inputs": inputs,
        "config": cfg.model_dump(),
        "fleet": fleet.model_dump(),
        "channels": list(fleet.channel_names),
        "specs": specs,
        "splits": splits,
        "summary": summary,
    }
    storage.write_json(storage.join(tmp, MANIFEST), manifest)
    _publish(tmp, final)
    storage.write_bytes(storage.join(features_root, LATEST), sid.encode())
    log.info("snapshot %s written: %s", sid, summary)
    return {**summary, "snapshot_id": sid, "up_to_date": False}


def _publish(tmp: str, final: str) -> None:
    """Move the finished snapshot into place in one rename (local), so a reader never
    sees half of one."""
    fs, tpath = storage.resolve(tmp)
    _, fpath = storage.resolve(final)
    if storage.exists(final):  # an earlier run died after its rename: replace it
        fs.delete_dir(fpath)
    fs.move(tpath, fpath)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ray_jobs.ingest", description=__doc__)
    parser.add_argument("--source", default=None, help="fleet dataset (default: workspace data)")
    parser.add_argument("--out", default=None, help="features folder (default: workspace)")
    parser.add_argument("--window", type=int, default=WindowConfig().window)
    parser.add_argument("--stride", type=int, default=WindowConfig().stride)
    args = parser.parse_args(argv)

    def job() -> dict[str, Any]:
        settings = get_settings()
        source = args.source or str(settings.data_dir)
        cfg = WindowConfig(window=args.window, stride=args.stride)
        init_ray(settings)
        return run_ingest(source, args.out or str(settings.features_dir), cfg)

    return run_main(job)


if __name__ == "__main__":
    raise SystemExit(main())
