"""The prediction log's write-ahead file (``serve_apps/durable_log.py``): rows on disk
before ``extend`` returns, to Parquet at a flush, and a dead writer's rows recovered into
the log exactly once, whatever point it died at."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from pumpfleet import records
from pumpfleet.predlog import read_log
from serve_apps import durable_log
from serve_apps.durable_log import DurableLog


def _row(i: int) -> dict[str, object]:
    return {
        "request_id": f"r{i}",
        "timestamp": np.datetime64(1_700_000_000_000_000_000 + i, "ns"),
        "pump_id": f"p{i}",
        "pump_class": "esp",
        "arm": "champion",
        "model_version": "1",
        "rul_hours": np.float32(100.5 + i),
        "failure_probability": np.float64(0.25),
        "latency_ms": 1.0,
        "alert": np.bool_(False),
        "in_motor_temp": np.float32(60.0),
    }


def _segments(log: DurableLog) -> list[Path]:
    return sorted(log.wal.glob(f"*{durable_log.SUFFIX}"))


def test_rows_reach_parquet_at_a_flush_and_their_segment_goes(tmp_path: Path) -> None:
    log = DurableLog(str(tmp_path / "predictions"))
    log.extend([_row(0), _row(1)])
    table = records.rows_to_table([_row(i) for i in range(2, 70)])
    log.extend_table(table)
    assert log.wal == tmp_path / "predictions-wal"
    assert len(_segments(log)) == 1 and _segments(log)[0].stat().st_size > 0
    assert log.flush() == 70 and log.written == 70
    assert len(_segments(log)) == 1 and _segments(log)[0].stat().st_size == 0  # the new one
    got = read_log(str(tmp_path / "predictions")).sort_values("request_id")
    assert sorted(got["request_id"]) == sorted(f"r{i}" for i in range(70))
    first = got.set_index("request_id").loc["r1"]
    assert first["rul_hours"] == np.float32(101.5) and first["in_motor_temp"] == 60.0
    assert first["timestamp"] == pd.Timestamp(1_700_000_000_000_000_001)
    assert log.flush() == 0  # nothing new: no file, no new segment
    assert len(list((tmp_path / "predictions").rglob("*.parquet"))) == 1


def _die_after(root: Path, code: str) -> None:
    """A process that writes to a DurableLog at ``root`` and is SIGKILLed by itself."""
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        sys.path[:0] = {sys.path!r}
        from tests.unit.test_durable_log import _row
        from serve_apps.durable_log import DurableLog
        import pumpfleet.records as records
        log = DurableLog({str(root)!r})
        {code}
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr


def test_a_killed_writers_rows_are_recovered_once_by_the_next(tmp_path: Path) -> None:
    root = tmp_path / "predictions"
    _die_after(root, "log.extend([_row(0)]); log.extend([_row(1)])")
    # the next writer finds the dead one's segment unlocked and writes it to the log
    log = DurableLog(str(root))
    assert log.recovered == 2
    assert sorted(read_log(str(root))["request_id"]) == ["r0", "r1"]
    # a second recovery of the same rows (say the first died before deleting the
    # segment) overwrites the same file: never a second copy
    assert DurableLog(str(root)).recovered == 0
    assert len(read_log(str(root))) == 2
    assert len(list(root.rglob("*.parquet"))) == 1


def test_a_writer_killed_between_parquet_and_deleting_its_segment_is_not_counted_twice(
    tmp_path: Path,
) -> None:
    root = tmp_path / "predictions"
    code = (
        "log.extend([_row(0), _row(1)]); import pathlib; "
        "pathlib.Path.unlink = lambda self, missing_ok=False: None; log.flush()"
    )
    _die_after(root, code)  # its Parquet file is written, its segment is still there
    assert len(read_log(str(root))) == 2
    log = DurableLog(str(root))
    assert log.recovered == 2  # written again, under the same name
    assert len(read_log(str(root))) == 2 and len(list(root.rglob("*.parquet"))) == 1


def test_a_live_writers_segment_is_left_alone(tmp_path: Path) -> None:
    root = str(tmp_path / "predictions")
    live = DurableLog(root)
    live.extend([_row(0)])
    other = DurableLog(root)
    assert other.recovered == 0 and other.flush() == 0
    assert read_log(root).empty
    assert live.flush() == 1


def test_a_torn_last_frame_is_dropped_and_a_garbled_segment_set_aside(tmp_path: Path) -> None:
    root = tmp_path / "predictions"
    wal = tmp_path / "predictions-wal"
    wal.mkdir()
    frame = durable_log._frame(durable_log.ROWS, b'[{"request_id": "a", "timestamp": 1}]')
    (wal / f"dead-00000001-20261206{durable_log.SUFFIX}").write_bytes(frame + frame[:-3])
    (wal / f"dead-00000002-20261206{durable_log.SUFFIX}").write_bytes(
        durable_log._frame(durable_log.TABLE, b"not arrow")
    )
    log = DurableLog(str(root))
    assert log.recovered == 1
    assert list(read_log(str(root))["request_id"]) == ["a"]
    assert [p.name for p in wal.glob("*.bad")] == ["dead-00000002-20261206.bad"]
    assert [p.parent.name for p in root.rglob("*.parquet")] == ["date=2026-12-06"]


def test_feedback_rows_survive_the_write_ahead_too(tmp_path: Path) -> None:
    root = tmp_path / "feedback"
    log = DurableLog(str(root), to_table=records.feedback_table)
    row = {
        "pump_id": "p",
        "pump_class": "esp",
        "observed_at": np.datetime64(1_700_000_000_000_000_000, "ns"),
        "failed_at": None,
        "rul_hours": 5.0,
    }
    log.append(row)
    os.close(log._segment.fd)  # as if it died: the lock goes with the descriptor
    again = DurableLog(str(root), to_table=records.feedback_table)
    assert again.recovered == 1
    got = read_log(str(root))
    assert got["observed_at"][0] == pd.Timestamp(1_700_000_000_000_000_000)
    assert pa.types.is_floating(pa.array(got["rul_hours"]).type)
