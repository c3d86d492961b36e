"""Ingest on Ray Data: validate → quarantine bad rows with reasons → windows and labels
per pump → a feature snapshot (Parquet, partitioned by pump class) with its specs.

    python -m ray_jobs.ingest --source DATASET [--out FEATURES_DIR]

Two passes over the data, one shuffle: the readings are grouped by pump once and each
pump validated there (``ray_jobs.ingest_parts``); the counts, splits and statistics come
from the small per-pump parts, and the windows are cut while they are written.
"""

from __future__ import annotations

import argparse
import logging
import time
import uuid
from typing import Any, cast

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import ray
from ray.data.context import ShuffleStrategy
from ray.data.datasource import Partitioning
from ray.data.datasource.partitioning import PartitionStyle

from pumpfleet import storage
from pumpfleet.entry import run_main
from pumpfleet.errors import DataError, InputError
from pumpfleet.inputs import scan
from pumpfleet.job_options import add_ingest_args, window_config
from pumpfleet.schema import EventType, read_fleet_schema
from pumpfleet.settings import Settings, get_settings
from pumpfleet.snapshot import LATEST, MANIFEST, snapshot_id
from pumpfleet.windows import SPLITS, WindowConfig, assign_splits, time_cutoff
from ray_jobs._ray import cluster_cpus, init_ray
from ray_jobs.ingest_parts import (
    class_regime_statistics,
    class_statistics,
    compact_strings,
    fit_class_regimes,
    from_ipc,
    pump_parts,
    quarantined_rows,
    regime_statistics_of,
    specs_from_statistics,
    windows_of,
)

log = logging.getLogger(__name__)


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


class _Stages:
    """Logs how long each stage took (Ray Data runs lazily: a stage ends where it executes)."""

    def __init__(self, out: dict[str, float] | None) -> None:
        self.out = out if out is not None else {}
        self.last = time.monotonic()

    def __call__(self, name: str) -> None:
        now = time.monotonic()
        self.out[name] = round(now - self.last, 2)
        self.last = now
        log.info("stage %s: %.1f s", name, self.out[name])


def _read(files: list[str], fs: Any, base_dir: str, blocks: int) -> ray.data.Dataset:
    """The readings with their class (from the path) and source file, set up for the
    grouping by pump that follows."""
    ctx = ray.data.DataContext.get_current()
    # Ray's first Parquet reader: the second starts 32 footer-reading actors per read,
    # which took 16 of 20 s to read 10M rows on 2 CPUs (the files are checked already).
    v2, ctx.use_datasource_v2 = ctx.use_datasource_v2, False
    try:
        ds = ray.data.read_parquet(
            files,
            filesystem=fs,
            partitioning=Partitioning(PartitionStyle.HIVE, base_dir=base_dir),
            include_paths=True,
            override_num_blocks=min(len(files), blocks),
        )
    finally:
        ctx.use_datasource_v2 = v2
    # The hash shuffle's aggregator actors took more than twice as long on 2 CPUs
    # (27 s against 12 s to group 10M rows).
    ds.context.shuffle_strategy = ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
    # Pandas batches with numpy dtypes, which validation and windowing are written for:
    # on Ray's Arrow-backed dtypes (its default since 2.56) they ran 40% slower.
    ds.context.enable_arrow_backed_pandas_conversion = False
    return ds.map_batches(compact_strings, batch_format="pyarrow", batch_size=None)


def _blocks(rows: int, cpus: int) -> int:
    """Blocks to read into. The sort-based shuffle makes as many partitions as it gets
    blocks, and each partition is one task of pump work: 8 per CPU balance those tasks
    (16 for 10M rows on 2 CPUs; 32 were no faster), but no block under 250k rows, since
    tasks cost overhead (for 1M rows validation took 9.9 s with 4 blocks, 11.5 s with 16)."""
    return max(1, min(8 * cpus, rows // 250_000))


def _window_counts(fs: Any, path: str) -> pd.Series:
    """Windows per class and split, read back from the files written (their split only)."""
    if fs.get_file_info(path).type == pafs.FileType.NotFound:  # no pump had a window
        return pd.Series(dtype="int64")
    classes = pads.partitioning(pa.schema([("pump_class", pa.string())]), flavor="hive")
    data = pads.dataset(path, filesystem=fs, format="parquet", partitioning=classes)
    table = data.to_table(columns=["pump_class", "split"])
    return table.to_pandas().groupby(["pump_class", "split"]).size()


def _parts_table(parts: ray.data.Dataset, column: str) -> pd.DataFrame:
    tables = [
        t
        for batch in parts.select_columns([column]).iter_batches(
            batch_format="pyarrow", batch_size=None
        )
        for t in from_ipc(batch.column(column))  # type: ignore[union-attr,operator]
    ]
    return pa.concat_tables(tables, promote_options="permissive").to_pandas()


def run_ingest(
    source: str, features_root: str, cfg: WindowConfig, stages: dict[str, float] | None = None
) -> dict[str, Any]:
    """Turn a fleet dataset into a feature snapshot; returns the job summary. ``stages``,
    if given, receives the seconds each stage took."""
    started = time.monotonic()
    stage = _Stages(stages)
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
    stage("scan")

    # Each pump's rows together once, validated there; what comes out is small.
    parts = (
        _read(files, fs, path, _blocks(rows_in, cluster_cpus()))
        .groupby("pump_id")
        .map_groups(
            cast(Any, pump_parts),
            fn_kwargs={"fleet": fleet, "files": files},
            batch_format="pandas",
        )
        .materialize()
    )
    stage("validate")

    counts = _parts_table(parts, "counts")
    pump_stats = _parts_table(parts, "stats")
    good_rows = counts["reason"].isna()
    n_good = int(counts.loc[good_rows, "rows"].sum())
    n_bad = int(counts.loc[~good_rows, "rows"].sum())
    if n_good + n_bad != rows_in:  # pragma: no cover - would be a bug in validation
        raise DataError(f"counts do not reconcile: {rows_in} in, {n_good} good + {n_bad} bad")
    if pump_stats.duplicated(["pump_id", "pump_class"]).any():  # pragma: no cover
        raise DataError("a pump's rows were split across groups (a bug in the grouping)")
    if pump_stats.empty:
        raise DataError(f"{source}: no valid readings (all {rows_in} rows quarantined)")
    by_class: dict[str, list[str]] = {
        str(k): list(v) for k, v in pump_stats.groupby("pump_class")["pump_id"].apply(list).items()
    }
    splits = assign_splits(by_class, cfg.val_fraction, cfg.holdout_fraction)
    cutoff = time_cutoff(int(pump_stats["t_min"].min()), int(pump_stats["t_max"].max()), cfg)
    fits = (
        fit_class_regimes(_parts_table(parts, "sample"), splits, fleet.settings)
        if cfg.regimes
        else {}
    )
    regime_stats = {}
    if fits:
        per_pump = parts.select_columns(["readings"]).map_batches(
            regime_statistics_of,
            fn_kwargs={
                "fits": {c: (f.center, f.scale) for c, f in fits.items()},
                "channels": fleet.channel_names,
                "settings": fleet.settings,
            },
            batch_format="pyarrow",
            batch_size=None,
        )
        regime_stats = class_regime_statistics(
            _parts_table(per_pump, "regime_stats"), splits, fleet.channel_names
        )
    class_stats = class_statistics(pump_stats, splits, fleet.channel_names)
    specs = specs_from_statistics(class_stats, cfg, fleet, fits, regime_stats)
    if not specs:
        raise DataError(f"{source}: no class has training data with varying readings")
    stage("splits_and_stats")

    layout = [*fleet.channel_names, *fleet.settings]  # what a window holds per step
    tmp = storage.join(features_root, f".tmp-{sid}-{uuid.uuid4().hex[:8]}")
    wfs, wpath = storage.resolve(storage.join(tmp, "windows"))
    parts.select_columns(["readings"]).map_batches(
        windows_of,
        fn_kwargs={
            "failures": _failures(source),
            "splits": splits,
            "cfg": cfg,
            "channels": layout,
            "cutoff_ms": cutoff,
        },
        batch_format="pyarrow",
        batch_size=None,
    ).write_parquet(wpath, filesystem=wfs, partition_cols=["pump_class"])
    stage("windows")
    if n_bad:
        qfs, qpath = storage.resolve(storage.join(tmp, "quarantine"))
        parts.select_columns(["quarantine"]).map_batches(
            quarantined_rows, batch_format="pyarrow", batch_size=None
        ).write_parquet(qpath, filesystem=qfs)
    stage("quarantine")
    per_file = counts.assign(quarantined=counts["rows"].where(~good_rows, 0))
    per_file = per_file.groupby("path")[["rows", "quarantined"]].sum()
    windows = _window_counts(wfs, wpath)
    per_class = {cls: {s: int(windows.get((cls, s), 0)) for s in SPLITS} for cls in sorted(specs)}
    reasons = counts[~good_rows].groupby("reason")["rows"].sum().to_dict()
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
            str(p): {"rows": int(r["rows"]), "quarantined": int(r["quarantined"])}
            for p, r in per_file.iterrows()
        },
        "pumps": len(splits),
        "config": cfg.model_dump(),
        "windows": per_class,
        "time_cutoff": (
            None if cutoff is None else pd.Timestamp(cutoff, unit="ms", tz="UTC").isoformat()
        ),
        "regimes": {
            cls: {"k": f.center.shape[0], "silhouette": round(f.silhouette, 3)}
            for cls, f in sorted(fits.items())
        },
        "seconds": round(time.monotonic() - started, 1),
    }
    manifest = {
        "id": sid,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "inputs": inputs,
        "config": cfg.model_dump(),
        "fleet": fleet.model_dump(),
        "channels": layout,
        "specs": specs,
        "splits": splits,
        "summary": summary,
    }
    storage.write_json(storage.join(tmp, MANIFEST), manifest)
    _publish(tmp, final)
    storage.write_bytes(storage.join(features_root, LATEST), sid.encode())
    stage("publish")
    log.info("snapshot %s written: %s", sid, summary)
    return {**summary, "snapshot_id": sid, "up_to_date": False}


EXPERIMENT = "pumpfleet-ingest"


def _metric_name(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "_-./ " else "." for ch in text)


def log_summary(settings: Settings, summary: dict[str, Any]) -> str:
    """Record an ingest in MLflow (experiment ``pumpfleet-ingest``): the source and the
    window config as params, the reconciled counts per reason and the windows per class
    and split as metrics, the whole summary as ``ingest_summary.json``. Returns the run
    id."""
    from pumpfleet.registry import Registry

    registry = Registry(settings.tracking_uri, settings.artifact_root)
    sid = str(summary["snapshot_id"])
    run_id = registry.start_run(
        EXPERIMENT,
        f"ingest-{sid}",
        params={"source": summary["source"], **summary.get("config", {})},
        tags={"feature_snapshot": sid, "status": str(summary["status"])},
    )
    metrics: dict[str, float] = {
        "rows_in": summary["rows_in"],
        "rows_valid": summary["rows_valid"],
        "rows_quarantined": summary["rows_quarantined"],
        "files_read": summary["files_read"],
        "files_rejected": len(summary["files_rejected"]),
        "pumps": summary["pumps"],
        "seconds": summary["seconds"],
    }
    for reason, rows in summary["quarantine_reasons"].items():
        metrics[_metric_name(f"quarantined.{reason}")] = rows
    for cls, per_split in summary["windows"].items():
        for split, n in per_split.items():
            metrics[f"windows.{cls}.{split}"] = n
    for cls, regime in summary.get("regimes", {}).items():
        metrics[f"regimes.{cls}"] = regime["k"]
    registry.log_metrics(run_id, metrics)
    registry.log_dict(run_id, summary, "ingest_summary.json")
    registry.end_run(run_id)
    return run_id


def ingest_and_log(
    settings: Settings, source: str, features_root: str, cfg: WindowConfig
) -> dict[str, Any]:
    """:func:`run_ingest`, and a new snapshot's summary recorded in MLflow."""
    summary = run_ingest(source, features_root, cfg)
    if not summary["up_to_date"]:
        summary["mlflow_run_id"] = log_summary(settings, summary)
    return summary


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
    add_ingest_args(parser)
    args = parser.parse_args(argv)

    def job() -> dict[str, Any]:
        settings = get_settings()
        source = args.source or str(settings.data_dir)
        cfg = window_config(args)
        init_ray(settings)
        return ingest_and_log(settings, source, args.out or str(settings.features_dir), cfg)

    return run_main(job)


if __name__ == "__main__":
    raise SystemExit(main())
