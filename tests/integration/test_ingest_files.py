"""Damaged input files: set aside with their reason, the rest ingested, counts exact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pumpfleet.errors import DataError
from pumpfleet.simulator import SimulationConfig, simulate
from pumpfleet.snapshot import open_snapshot
from pumpfleet.windows import WindowConfig

pytestmark = [pytest.mark.ray]


def _quarantine(features: Path, snapshot: str) -> str:
    """The quarantine folder of the run a snapshot's manifest publishes."""
    return f"{open_snapshot(str(features), snapshot).data}/quarantine"


def test_damaged_files_are_set_aside_and_the_rest_goes_on(tmp_path: Path, ray_session: Any) -> None:
    from ray_jobs.ingest import run_ingest

    data = tmp_path / "fleet"
    counts = simulate(SimulationConfig(pumps=12, days=12, seed=2), str(data))
    esp = data / "readings" / "pump_class=esp"
    good_file = next(esp.glob("*.parquet"))
    sample = pq.read_table(good_file).slice(0, 50)
    # Truncated: the footer is gone.
    raw = good_file.read_bytes()
    (esp / "truncated.parquet").write_bytes(raw[: len(raw) // 2])
    # A mistyped column: temperatures written as text.
    typed = sample.set_column(
        sample.schema.get_field_index("motor_temp"),
        "motor_temp",
        pa.array([str(v) for v in sample.column("motor_temp").to_pylist()]),
    )
    pq.write_table(typed, esp / "mistyped.parquet")
    # A missing column.
    pq.write_table(sample.drop_columns(["flow"]), esp / "missing.parquet")

    out = run_ingest(str(data), str(tmp_path / "features"), WindowConfig())
    assert out["status"] == "partial"
    rejected = {Path(r["path"]).name: r for r in out["files_rejected"]}
    assert set(rejected) == {"truncated.parquet", "mistyped.parquet", "missing.parquet"}
    assert rejected["truncated.parquet"]["reason"].startswith("unreadable")
    assert rejected["truncated.parquet"]["rows"] is None
    assert rejected["mistyped.parquet"]["reason"] == "column motor_temp is string, expected number"
    assert rejected["missing.parquet"]["reason"] == "missing column flow"
    assert out["rows_in_rejected_files"] == 100
    # Everything readable went through, exactly.
    assert out["rows_in"] == counts["readings"]
    assert out["rows_valid"] + out["rows_quarantined"] == out["rows_in"]
    assert sum(f["rows"] for f in out["per_file"].values()) == out["rows_in"]
    assert out["files_read"] == len(out["per_file"]) == 4


def test_quarantined_rows_name_their_source_file(tmp_path: Path, ray_session: Any) -> None:
    from ray_jobs.ingest import run_ingest

    data = tmp_path / "fleet"
    simulate(SimulationConfig(pumps=4, days=6, seed=3), str(data))
    rod = data / "readings" / "pump_class=rod"
    rows = pq.read_table(next(rod.glob("*.parquet"))).slice(10, 4).to_pandas()
    rows["vibration"] = 500.0  # beyond the physical range
    rows["timestamp"] = rows["timestamp"] + pd.Timedelta(minutes=30)  # fresh timestamps
    loose = pa.schema([f.with_nullable(True) for f in pq.read_schema(next(rod.glob("*.parquet")))])
    pq.write_table(
        pa.Table.from_pandas(rows, schema=loose, preserve_index=False), rod / "late.parquet"
    )
    out = run_ingest(str(data), str(tmp_path / "features"), WindowConfig())
    assert out["status"] == "success"
    assert out["quarantine_reasons"] == {"out_of_range:vibration": 4}
    q = pd.read_parquet(_quarantine(tmp_path / "features", out["snapshot_id"]))
    assert [Path(p).name for p in q["source_file"]] == ["late.parquet"] * 4
    late = [f for p, f in out["per_file"].items() if p.endswith("late.parquet")]
    assert late == [{"rows": 4, "quarantined": 4}]


def test_all_files_damaged_is_a_failure(tmp_path: Path, ray_session: Any) -> None:
    from ray_jobs.ingest import run_ingest

    part = tmp_path / "fleet" / "readings" / "pump_class=esp"
    part.mkdir(parents=True)
    (part / "x.parquet").write_bytes(b"PAR1 nothing here")
    with pytest.raises(DataError, match="all 1 files rejected"):
        run_ingest(str(tmp_path / "fleet"), str(tmp_path / "features"), WindowConfig())


def test_every_fault_kind_injected_reconciles(tmp_path: Path, ray_session: Any) -> None:
    """Each fault on its own class or span, so the expected counts are exact."""
    from pumpfleet.faults import FaultSpec
    from ray_jobs.ingest import run_ingest

    faults = [
        FaultSpec(kind="spike", classes=("esp",), start_day=0, duration_days=1, rate=0.1),
        FaultSpec(kind="duplicate", classes=("rod",), start_day=0, duration_days=1, rate=0.2),
        FaultSpec(kind="dropout", classes=("pcp",), start_day=0, duration_days=1),
        FaultSpec(kind="stuck", classes=("centrifugal",), start_day=0.5, duration_days=0.3),
        FaultSpec(
            kind="unit_error",
            classes=("esp",),
            channel="discharge_pressure",
            start_day=2,
            duration_days=1,
        ),
        FaultSpec(kind="out_of_order", classes=("rod",), start_day=2, duration_days=1),
        FaultSpec(
            kind="clock_skew",
            classes=("pcp",),
            pumps=0.5,
            start_day=2,
            duration_days=1,
            skew_minutes=-120,
        ),
    ]
    data = tmp_path / "fleet"
    counts = simulate(SimulationConfig(pumps=16, days=8, seed=4, faults=faults), str(data))
    rec = pd.read_parquet(data / "faults" / "injected.parquet").groupby("kind")
    rows = rec.rows.sum()
    beyond = rec.rows_out_of_range.sum()
    skewed = rec.pump_id.nunique()["clock_skew"]

    out = run_ingest(str(data), str(tmp_path / "features"), WindowConfig())
    assert out["rows_in"] == counts["readings"]
    assert out["rows_valid"] + out["rows_quarantined"] == out["rows_in"]
    by_kind: dict[str, int] = {}
    for reason, n in out["quarantine_reasons"].items():
        by_kind[reason.split(":")[0]] = by_kind.get(reason.split(":")[0], 0) + n
    assert by_kind == {
        # Spikes beyond the range, and every psi-for-bar reading (all beyond 600 bar).
        "out_of_range": beyond["spike"] + rows["unit_error"],
        "spike": rows["spike"] - beyond["spike"],
        # Exact copies, plus the two hours a -120 min skew lays over the rows before it.
        "duplicate_timestamp": rows["duplicate"] + 2 * skewed,
        "no_readings": rows["dropout"],
        "stuck": rows["stuck"],
    }
    assert beyond["unit_error"] == rows["unit_error"]
    # Rows that arrived out of order are sorted back, not lost.
    assert rows["out_of_order"] > 0
    q = pd.read_parquet(_quarantine(tmp_path / "features", out["snapshot_id"]))
    assert len(q) == out["rows_quarantined"]
    assert q["quarantine_reason"].notna().all() and q["source_file"].notna().all()
    # The single process calls the same array functions directly: the same counts, per
    # file and reason, and the same windows, as Ray Data's run.
    from benchmarks.ingest_check import COUNTED, compare
    from pumpfleet.ingest_stream import run_ingest_stream

    single = run_ingest_stream(str(data), str(tmp_path / "single"), WindowConfig(), block_rows=1)
    assert single["snapshot_id"] == out["snapshot_id"]
    assert {k: single[k] for k in (*COUNTED, "per_file")} == {
        k: out[k] for k in (*COUNTED, "per_file")
    }
    ray_windows = Path(open_snapshot(str(tmp_path / "features")).data) / "windows"
    single_windows = Path(open_snapshot(str(tmp_path / "single")).data) / "windows"
    check = compare(ray_windows, single_windows)
    assert check["same"] and check["windows"] > 0, check
    q1 = pd.read_parquet(_quarantine(tmp_path / "single", single["snapshot_id"]))
    reasons = q["quarantine_reason"].value_counts().sort_index()
    assert q1["quarantine_reason"].value_counts().sort_index().equals(reasons)


def test_the_shuffle_where_pumps_span_files_writes_the_same(
    tmp_path: Path, ray_session: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where a group of files sharing pumps is too large for one task, the readings are
    sorted by pump once instead: the same counts and windows as the path without it."""
    import ray_jobs.ingest
    from benchmarks.ingest_check import COUNTED, compare, every_fault

    data = tmp_path / "fleet"
    simulate(SimulationConfig(pumps=8, days=10, seed=5, faults=every_fault(10)), str(data))
    blocks = ray_jobs.ingest.run_ingest(str(data), str(tmp_path / "blocks"), WindowConfig())
    monkeypatch.setattr(ray_jobs.ingest, "MAX_BLOCK_ROWS", 0)  # every group too large
    stages: dict[str, float] = {}
    sorted_ = ray_jobs.ingest.run_ingest(
        str(data), str(tmp_path / "sorted"), WindowConfig(), stages
    )
    assert "quarantine" in stages  # the shuffle's path (it writes the quarantine apart)
    assert sorted_["rows_quarantined"] > 0
    keys = (*COUNTED, "per_file")
    assert {k: sorted_[k] for k in keys} == {k: blocks[k] for k in keys}
    check = compare(
        Path(open_snapshot(str(tmp_path / "sorted")).data) / "windows",
        Path(open_snapshot(str(tmp_path / "blocks")).data) / "windows",
    )
    assert check["same"] and check["windows"] > 0, check
    q = pd.read_parquet(_quarantine(tmp_path / "blocks", blocks["snapshot_id"]))
    assert len(q) == blocks["rows_quarantined"]
