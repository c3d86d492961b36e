"""A whole ingest in this process, with pandas where ``ray_jobs.ingest`` maps the same
core functions with Ray Data (as ``test_ingestion`` does it step by step), on local
folders or ``s3://`` URIs alike."""

from __future__ import annotations

import time
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pumpfleet import storage
from pumpfleet.feature_specs import fit_class_regimes
from pumpfleet.ingest_parts import from_ipc, pump_parts, quarantined_rows, windows_of
from pumpfleet.ingestion import (
    IngestPlan,
    class_specs,
    failures,
    plan_ingest,
    publish_snapshot,
    split_pumps,
    window_counts,
)
from pumpfleet.windows import WindowConfig


def readings(plan: IngestPlan) -> pd.DataFrame:
    """The readings as Ray Data reads them: with their source ``path`` and, from the
    hive folder, their ``pump_class``."""
    frames = []
    for f in plan.files:
        t = pq.read_table(f, filesystem=plan.fs).to_pandas()
        cls = f.rsplit("/", 2)[-2].split("=", 1)[1]
        frames.append(t.assign(path=f, pump_class=cls))
    return pd.concat(frames, ignore_index=True)


def _table(parts: pa.Table, column: str) -> pd.DataFrame:
    return pa.concat_tables(
        from_ipc(parts.column(column)), promote_options="permissive"
    ).to_pandas()


def write_run(plan: IngestPlan) -> tuple[str, dict[str, Any]]:
    """Everything an ingest writes before it publishes: the data under a run prefix of
    its own; returns that prefix and what :func:`publish` needs besides."""
    rows = readings(plan)
    parts = pa.concat_tables(
        pump_parts(r, plan.fleet, plan.files) for _, r in rows.groupby("pump_id")
    )
    pumps = split_pumps(plan, _table(parts, "counts"), _table(parts, "stats"))
    fits = (
        fit_class_regimes(_table(parts, "sample"), pumps.splits, plan.fleet.settings)
        if plan.cfg.regimes
        else {}
    )
    specs = class_specs(plan, pumps, fits, {})
    run = plan.staging()
    windows = windows_of(
        parts, failures(plan.source), pumps.splits, plan.cfg, plan.layout, pumps.cutoff
    )
    fs, path = storage.resolve(storage.join(run, "windows"))
    pq.write_to_dataset(windows, path, filesystem=fs, partition_cols=["pump_class"])
    if pumps.n_bad:
        qfs, qpath = storage.resolve(storage.join(run, "quarantine"))
        pq.write_to_dataset(quarantined_rows(parts), qpath, filesystem=qfs)
    counts = window_counts(fs, path)
    return run, {"pumps": pumps, "specs": specs, "fits": fits, "windows": counts}


def publish(plan: IngestPlan, run: str, parts: dict[str, Any]) -> dict[str, Any]:
    return publish_snapshot(
        plan, run, parts["pumps"], parts["specs"], parts["fits"], parts["windows"], time.time()
    )


def ingest(source: str, features_root: str, cfg: WindowConfig | None = None) -> dict[str, Any]:
    """An ingest, as ``ray_jobs.ingest.run_ingest`` returns it."""
    plan = plan_ingest(source, features_root, cfg or WindowConfig(stride=8))
    if plan.up_to_date is not None:
        return plan.up_to_date
    run, parts = write_run(plan)
    summary = publish(plan, run, parts)
    return {**summary, "snapshot_id": plan.snapshot_id, "up_to_date": False}
