"""The Ray ingest's per-block tasks (``pumpfleet.ingest_tasks``), called here in this
process as Ray Data's workers call them: the same counts, quarantine and windows as the
single process, and a task run again writes the same files, not more."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from benchmarks.ingest_check import compare, faulted_fleet
from pumpfleet import ingest_tasks as tasks
from pumpfleet import storage
from pumpfleet.feature_specs import fit_class_regimes
from pumpfleet.ingest_block import from_ipc
from pumpfleet.ingest_stream import file_blocks, run_ingest_stream
from pumpfleet.ingestion import failures, plan_ingest, split_pumps
from pumpfleet.snapshot import open_snapshot
from pumpfleet.windows import WindowConfig


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 pumps in files of a few pumps each, every fault kind injected."""
    path = tmp_path_factory.mktemp("tasks") / "fleet"
    return faulted_fleet(path, pumps=12, days=20, seed=7, batch_rows=1500)


def _frame(results: list[pa.Table], column: str) -> pd.DataFrame:
    tables = [t for r in results for t in from_ipc(r.column(column))]
    return pa.concat_tables(tables, promote_options="permissive").to_pandas()


def test_the_tasks_write_what_the_single_process_writes(fleet: Path, tmp_path: Path) -> None:
    cfg = WindowConfig()
    single = run_ingest_stream(str(fleet), str(tmp_path / "single"), cfg)
    plan = plan_ingest(str(fleet), str(tmp_path / "tasks"), cfg)
    items = tasks.block_items(file_blocks(plan, block_rows=2000))
    assert len(items) > 2
    run = plan.staging()

    def validate(item: dict[str, object]) -> pa.Table:
        return tasks.validate_blocks(pa.Table.from_pylist([item]), plan, run)

    parts = [validate(item) for item in items]
    assert sum(p.column("quarantined")[0].as_py() for p in parts) == single["rows_quarantined"]
    pumps = split_pumps(plan, _frame(parts, "counts"), _frame(parts, "stats"))
    assert (pumps.n_good, pumps.n_bad) == (single["rows_valid"], single["rows_quarantined"])
    fits = fit_class_regimes(_frame(parts, "sample"), pumps.splits, plan.fleet.settings)
    assert fits  # the stream fits the same regimes; their statistics come from pass two
    centres = {c: (f.center, f.scale) for c, f in fits.items()}
    fail = failures(str(fleet))

    def windows(item: dict[str, object]) -> pa.Table:
        batch = pa.Table.from_pylist([item])
        return tasks.window_blocks(batch, plan, run, fail, pumps.splits, pumps.cutoff, centres)

    stats = [windows(item) for item in items]
    assert sum(len(t) for s in stats for t in from_ipc(s.column("regime_stats"))) > 0
    # Every block's quarantined rows in a file of its own, with their reasons.
    q = pd.read_parquet(storage.join(run, "quarantine"))
    assert len(q) == single["rows_quarantined"] and q["quarantine_reason"].notna().all()
    per_reason = q["quarantine_reason"].value_counts().to_dict()
    assert per_reason == single["quarantine_reasons"]
    expected = Path(open_snapshot(str(tmp_path / "single")).data) / "windows"
    check = compare(Path(run) / "windows", expected)
    assert check["same"] and check["windows"] > 100, check

    # A block's task run again (as after a lost node) overwrites its own files.
    files_before = sorted(p.relative_to(run) for p in Path(run).rglob("*.parquet"))
    validate(items[1])
    windows(items[1])
    assert sorted(p.relative_to(run) for p in Path(run).rglob("*.parquet")) == files_before
    assert compare(Path(run) / "windows", expected)["same"]
    assert Path(tasks.scratch_file(run, 1)).exists()  # the driver removes the spilled readings
    assert Path(run, tasks.SCRATCH).is_dir()
