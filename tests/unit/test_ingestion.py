"""The ingest without Ray: the per-pump pass (``pumpfleet.ingest_parts``) mapped over a
small simulated fleet with plain pandas, the splits, specs and snapshot decided from its
parts (``pumpfleet.ingestion``): Ray Data only maps these functions. The snapshot it
publishes is the one training reads, and ingesting the same files again finds it."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pumpfleet.errors import DataError
from pumpfleet.feature_specs import fit_class_regimes
from pumpfleet.ingest_parts import from_ipc, pump_parts, quarantined_rows, windows_of
from pumpfleet.ingestion import (
    class_specs,
    failures,
    plan_ingest,
    publish_snapshot,
    split_pumps,
    window_counts,
)
from pumpfleet.schema import CHANNELS
from pumpfleet.simulator import SimulationConfig, simulate
from pumpfleet.snapshot import open_snapshot
from pumpfleet.windows import SPLITS, WindowConfig


def _readings(files: list[str]) -> pd.DataFrame:
    """The readings as Ray Data reads them: with their source ``path`` and, from the
    hive folder, their ``pump_class``."""
    frames = []
    for f in files:
        t = pq.read_table(f).to_pandas()
        frames.append(t.assign(path=f, pump_class=Path(f).parent.name.split("=", 1)[1]))
    return pd.concat(frames, ignore_index=True)


def _table(parts: pa.Table, column: str) -> pd.DataFrame:
    tables = from_ipc(parts.column(column))
    return pa.concat_tables(tables, promote_options="permissive").to_pandas()


def test_an_ingest_in_one_process_makes_a_snapshot_training_can_read(tmp_path: Path) -> None:
    source, root = str(tmp_path / "fleet"), str(tmp_path / "features")
    sim = simulate(SimulationConfig(pumps=12, days=8, seed=2), source)
    cfg = WindowConfig(stride=8)
    started = time.monotonic()
    plan = plan_ingest(source, root, cfg)
    assert plan.up_to_date is None and plan.rows_in == sim["readings"] and not plan.rejected
    assert plan.cfg.interval_seconds == plan.fleet.interval_seconds  # filled in
    assert plan_ingest(source, root, cfg).snapshot_id == plan.snapshot_id  # content-addressed
    readings = _readings(plan.files)
    readings.loc[3, "motor_temp"] = 1e6  # out of range: quarantined, with its reason
    parts = pa.concat_tables(
        pump_parts(rows, plan.fleet, plan.files) for _, rows in readings.groupby("pump_id")
    )
    pumps = split_pumps(plan, _table(parts, "counts"), _table(parts, "stats"))
    assert (pumps.n_good, pumps.n_bad) == (plan.rows_in - 1, 1)
    assert set(pumps.splits.values()) == {"train", "val", "holdout"}
    fits = fit_class_regimes(_table(parts, "sample"), pumps.splits, plan.fleet.settings)
    specs = class_specs(plan, pumps, fits, {})
    assert sorted(specs) == sorted(readings["pump_class"].unique())
    staging = plan.staging()
    windows = windows_of(parts, failures(source), pumps.splits, plan.cfg, plan.layout, pumps.cutoff)
    out = Path(staging) / "windows"
    pq.write_to_dataset(windows, str(out), partition_cols=["pump_class"])
    bad = quarantined_rows(parts)
    assert bad.column("quarantine_reason").to_pylist() == ["out_of_range:motor_temp"]
    fs, path = plan.fs, str(out)
    summary = publish_snapshot(plan, staging, pumps, specs, fits, window_counts(fs, path), started)
    assert summary["rows_valid"] + summary["rows_quarantined"] == summary["rows_in"]
    assert sum(f["quarantined"] for f in summary["per_file"].values()) == 1
    assert set(summary["windows"]) == set(specs)
    assert all(set(w) == set(SPLITS) for w in summary["windows"].values())

    snap = open_snapshot(root)  # LATEST names it
    assert snap.id == plan.snapshot_id and snap.classes == sorted(specs)
    cls = snap.classes[0]
    raw, cols = snap.load(cls, "train")
    assert raw.shape[1:] == (cfg.window, len(snap.spec(cls).inputs))
    # Each channel's physical range from the fleet schema: what the scoring doors apply.
    assert snap.spec(cls).ranges == {
        c: (CHANNELS[c][1], CHANNELS[c][2]) for c in snap.spec(cls).channels
    }
    assert len(raw) == summary["windows"][cls]["train"] and np.isfinite(cols["rul_hours"]).all()
    again = plan_ingest(source, root, cfg)
    assert again.up_to_date is not None and again.up_to_date["up_to_date"]
    assert again.up_to_date["rows_in"] == plan.rows_in


def test_a_fleet_whose_every_row_is_bad_is_refused(tmp_path: Path) -> None:
    source = str(tmp_path / "fleet")
    simulate(SimulationConfig(pumps=4, days=2, seed=1), source)
    plan = plan_ingest(source, str(tmp_path / "features"), WindowConfig())
    readings = _readings(plan.files).assign(motor_temp=1e6)
    parts = pa.concat_tables(
        pump_parts(rows, plan.fleet, plan.files) for _, rows in readings.groupby("pump_id")
    )
    with pytest.raises(DataError, match=r"no valid readings \(all \d+ rows quarantined\)"):
        split_pumps(plan, _table(parts, "counts"), _table(parts, "stats"))
