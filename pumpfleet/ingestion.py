"""The ingest's steps that need no Ray: which files to read and the snapshot they make
(the same inputs and config: the same snapshot, already there), the failure events, the
splits and statistics decided from the per-block parts (``pumpfleet.ingest_parts``), and
the finished snapshot's summary, manifest and publication, recorded in MLflow.
``ray_jobs.ingest`` reads, groups and writes with Ray Data between these steps, and
``pumpfleet.ingest_stream`` in one process.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pumpfleet import storage
from pumpfleet.errors import DataError, InputError
from pumpfleet.feature_specs import class_statistics, specs_from_statistics
from pumpfleet.inputs import RejectedFile, scan
from pumpfleet.job_options import LOCAL_INGEST_MAX_ROWS
from pumpfleet.lineage import feature_code_hash
from pumpfleet.regimes import RegimeFit
from pumpfleet.schema import EventType, FleetSchema, read_fleet_schema
from pumpfleet.settings import Settings
from pumpfleet.snapshot import LATEST, MANIFEST, new_run, publish, snapshot_id
from pumpfleet.windows import SPLITS, WindowConfig, assign_splits, time_cutoff

log = logging.getLogger(__name__)

EXPERIMENT = "pumpfleet-ingest"


class Stages:
    """Logs how long each stage took (Ray Data runs lazily: a stage ends where it executes)."""

    def __init__(self, out: dict[str, float] | None) -> None:
        self.out = out if out is not None else {}
        self.last = time.monotonic()

    def __call__(self, name: str) -> None:
        now = time.monotonic()
        self.out[name] = round(now - self.last, 2)
        self.last = now
        log.info("stage %s: %.1f s", name, self.out[name])


@dataclass(frozen=True)
class IngestPlan:
    """What an ingest reads (the readable files, their filesystem and base folder), the
    window config completed from the fleet schema, and the snapshot it writes: its id
    from ``inputs`` (each input file's path in the dataset and its content digest), the
    config and ``feature_code`` (the hash of the code that shapes the windows)."""

    source: str
    features_root: str
    fleet: FleetSchema
    files: list[str]
    rows_in: int
    rejected: list[RejectedFile]
    fs: Any
    base_dir: str
    inputs: dict[str, str]
    cfg: WindowConfig
    snapshot_id: str
    feature_code: str
    up_to_date: dict[str, Any] | None = None  # the summary, when the snapshot exists

    @property
    def final(self) -> str:
        return storage.join(self.features_root, self.snapshot_id)

    @property
    def layout(self) -> list[str]:
        """What a window holds per step: the channels, then the settings."""
        return [*self.fleet.channel_names, *self.fleet.settings]

    def staging(self) -> str:
        """A new prefix of this run's own to write the snapshot's data into, which its
        manifest, written last, publishes (:func:`pumpfleet.snapshot.publish`)."""
        return new_run(self.final)


def in_process(plan: IngestPlan, ray_address: str | None, ray_data: bool = False) -> bool:
    """Whether `pumpfleet ingest` runs ``plan`` in its own process rather than on Ray
    Data: never when asked for Ray Data (``ray_data``) or joined to a cluster
    (``ray_address``, as in a Ray job); else when the input has at most
    :data:`~pumpfleet.job_options.LOCAL_INGEST_MAX_ROWS` rows."""
    return not ray_data and not ray_address and plan.rows_in <= LOCAL_INGEST_MAX_ROWS


def plan_ingest(source: str, features_root: str, cfg: WindowConfig) -> IngestPlan:
    """The files of a fleet dataset to ingest (unreadable ones rejected, with reasons) and
    the snapshot they make; ``up_to_date`` is set when that snapshot exists already."""
    source, features_root = storage.absolute(source), storage.absolute(features_root)
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
    inputs = input_digests(source)
    if cfg.interval_seconds is None:
        cfg = cfg.model_copy(update={"interval_seconds": fleet.interval_seconds})
    code = feature_code_hash()
    sid = snapshot_id(inputs, {**cfg.model_dump(), "fleet": fleet.model_dump()}, code)
    plan = IngestPlan(
        source, features_root, fleet, files, rows_in, rejected, fs, path, inputs, cfg, sid, code
    )
    if storage.exists(storage.join(plan.final, MANIFEST)):
        log.info("snapshot %s is up to date with %s; nothing to do", sid, source)
        manifest = storage.read_json(storage.join(plan.final, MANIFEST))
        done = {**manifest["summary"], "snapshot_id": sid, "up_to_date": True}
        return replace(plan, up_to_date=done)
    return plan


def input_digests(source: str) -> dict[str, str]:
    """Every file of a fleet dataset that ingest reads (readings, rejected ones too, and
    events), by its path in the dataset, with its content digest (an object's ETag on
    S3, else sha256): what the snapshot id is made of."""
    return {
        f"{part}/{rel}": digest
        for part in ("readings", "events")
        for rel, digest in storage.digests(storage.join(source, part)).items()
    }


def failures(source: str) -> dict[str, list[int]]:
    """Each pump's failure times (ms since the epoch) from the dataset's events."""
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


@dataclass
class Pumps:
    """What the per-block parts say: rows per file and reason (``counts``), each pump's
    statistics, the good and quarantined row totals, the splits and the time cutoff."""

    counts: pd.DataFrame
    stats: pd.DataFrame
    n_good: int
    n_bad: int
    splits: dict[str, str]
    cutoff: int | None
    good_rows: pd.Series = field(repr=False)


def split_pumps(plan: IngestPlan, counts: pd.DataFrame, pump_stats: pd.DataFrame) -> Pumps:
    """Reconcile the parts' row counts with the files', and split the pumps."""
    good_rows = counts["reason"].isna()
    n_good = int(counts.loc[good_rows, "rows"].sum())
    n_bad = int(counts.loc[~good_rows, "rows"].sum())
    if n_good + n_bad != plan.rows_in:  # pragma: no cover - would be a bug in validation
        raise DataError(f"counts do not reconcile: {plan.rows_in} in, {n_good} good + {n_bad} bad")
    if pump_stats.duplicated(["pump_id", "pump_class"]).any():  # pragma: no cover
        raise DataError("a pump's rows were split across groups (a bug in the grouping)")
    if pump_stats.empty:
        raise DataError(f"{plan.source}: no valid readings (all {plan.rows_in} rows quarantined)")
    by_class: dict[str, list[str]] = {
        str(k): list(v) for k, v in pump_stats.groupby("pump_class")["pump_id"].apply(list).items()
    }
    cfg = plan.cfg
    splits = assign_splits(by_class, cfg.val_fraction, cfg.holdout_fraction)
    cutoff = time_cutoff(int(pump_stats["t_min"].min()), int(pump_stats["t_max"].max()), cfg)
    return Pumps(counts, pump_stats, n_good, n_bad, splits, cutoff, good_rows)


def class_specs(
    plan: IngestPlan,
    pumps: Pumps,
    fits: dict[str, RegimeFit],
    regime_stats: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
) -> dict[str, dict[str, Any]]:
    """Each class's feature spec from its training pumps' statistics (and regimes)."""
    stats = class_statistics(pumps.stats, pumps.splits, plan.fleet.channel_names)
    specs = specs_from_statistics(stats, plan.cfg, plan.fleet, fits, regime_stats)
    if not specs:
        raise DataError(f"{plan.source}: no class has training data with varying readings")
    return specs


def window_counts(fs: Any, path: str) -> pd.Series:
    """Windows per class and split, read back from the files written (their split only)."""
    if fs.get_file_info(path).type == pafs.FileType.NotFound:  # no pump had a window
        return pd.Series(dtype="int64")
    classes = pads.partitioning(pa.schema([("pump_class", pa.string())]), flavor="hive")
    data = pads.dataset(path, filesystem=fs, format="parquet", partitioning=classes)
    table = data.to_table(columns=["pump_class", "split"])
    return table.to_pandas().groupby(["pump_class", "split"]).size()


def publish_snapshot(
    plan: IngestPlan,
    staging: str,
    pumps: Pumps,
    specs: dict[str, dict[str, Any]],
    fits: dict[str, RegimeFit],
    windows: pd.Series,
    started: float,
) -> dict[str, Any]:
    """The summary and manifest of the snapshot whose data was written under
    ``staging`` (:meth:`IngestPlan.staging`), published by its manifest and made the
    latest; returns the summary."""
    counts, good_rows = pumps.counts, pumps.good_rows
    per_file = counts.assign(quarantined=counts["rows"].where(~good_rows, 0))
    per_file = per_file.groupby("path")[["rows", "quarantined"]].sum()
    per_class = {cls: {s: int(windows.get((cls, s), 0)) for s in SPLITS} for cls in sorted(specs)}
    reasons = counts[~good_rows].groupby("reason")["rows"].sum().to_dict()
    cutoff = pumps.cutoff
    summary = {
        "status": "partial" if plan.rejected else "success",
        "source": str(plan.source),
        "files_read": len(plan.files),
        "files_rejected": [r.as_dict() for r in plan.rejected],
        "rows_in_rejected_files": sum(r.rows or 0 for r in plan.rejected),
        "rows_in": plan.rows_in,
        "rows_valid": pumps.n_good,
        "rows_quarantined": pumps.n_bad,
        "quarantine_reasons": {str(k): int(v) for k, v in reasons.items()},
        "per_file": {
            str(p): {"rows": int(r["rows"]), "quarantined": int(r["quarantined"])}
            for p, r in per_file.iterrows()
        },
        "pumps": len(pumps.splits),
        "config": plan.cfg.model_dump(),
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
        "id": plan.snapshot_id,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "inputs": plan.inputs,
        "feature_code": plan.feature_code,
        "config": plan.cfg.model_dump(),
        "fleet": plan.fleet.model_dump(),
        "channels": plan.layout,
        "specs": specs,
        "splits": pumps.splits,
        "summary": summary,
    }
    publish(staging, manifest)
    storage.write_bytes(storage.join(plan.features_root, LATEST), plan.snapshot_id.encode())
    return summary


def _metric_name(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "_-./ " else "." for ch in text)


def log_summary(settings: Settings, summary: dict[str, Any]) -> str:
    """Record an ingest in MLflow (experiment ``pumpfleet-ingest``): the source and the
    window config as params, the reconciled counts per reason and the windows per class
    and split as metrics, the whole summary as ``ingest_summary.json``. Returns the run
    id."""
    from pumpfleet.registry import Registry  # MLflow only when an ingest is recorded

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
