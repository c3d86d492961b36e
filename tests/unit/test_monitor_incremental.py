"""Incremental monitoring: the prediction log partitioned by day and class, a watermark
per class, each run reading only the partitions since it plus the rolling window (what
was read is asserted file by file), a run that dies before its watermark read again in
full by the next one, old episodes leaving the window, the older layout and edge uploads
still read, and one bad file never stopping a run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from pumpfleet import storage
from pumpfleet.monitoring import incremental as inc
from pumpfleet.monitoring.incremental import Watermark, read_watermark, read_window
from pumpfleet.predlog import PredictionLog, read_log
from pumpfleet.settings import Settings, get_settings
from tests.s3_server import S3Server, s3_server, use_s3

DAY0 = pd.Timestamp("2026-03-01", tz="UTC")


def write_day(root: Path | str, day: int, cls: str, n: int = 10, layout: str = "class") -> str:
    """``n`` rows of ``cls`` stamped on day ``day`` (from DAY0), written in that day's
    partition: per class (today's layout) or every class in one file (the older one)."""
    ts = DAY0 + pd.Timedelta(days=day)
    frame = pd.DataFrame(
        {
            "request_id": [f"{cls}-{day}-{i}" for i in range(n)],
            "pump_id": [f"{cls}-{i % 3}" for i in range(n)],
            "pump_class": cls,
            "timestamp": [ts + pd.Timedelta(minutes=i) for i in range(n)],
            "in_flow": [float(day)] * n,
        }
    )
    folder = f"date={ts.date().isoformat()}" + (f"/pump_class={cls}" if layout == "class" else "")
    uri = storage.join(str(root), folder, f"part-{cls}-{day}.parquet")
    storage.write_bytes(uri, _parquet(frame))
    return f"{folder}/part-{cls}-{day}.parquet"


def _parquet(frame: pd.DataFrame) -> bytes:
    return frame.to_parquet()


def _days(window: inc.Window) -> list[str]:
    return sorted({f.day for f in window.files})


def test_the_log_is_written_per_day_and_class_and_read_whole(tmp_path: Path) -> None:
    log = PredictionLog(str(tmp_path), to_table=pa.Table.from_pylist)
    log.extend([{"pump_id": f"p{i}", "pump_class": c, "rul_hours": 1.0} for i, c in
                enumerate(["esp", "esp", "pcp", "a/b"])])  # fmt: skip
    assert log.flush() == 4
    names = storage.relative(tmp_path, storage.list_files(tmp_path, ".parquet"))
    folders = sorted(
        n.split("/", 1)[1].rsplit("/", 1)[0] if n.count("/") > 1 else "" for n in names
    )
    assert folders == ["", "pump_class=esp", "pump_class=pcp"]  # "a/b" cannot name a folder
    assert sorted(read_log(str(tmp_path))["pump_class"]) == ["a/b", "esp", "esp", "pcp"]


def test_a_run_reads_the_window_then_only_what_is_new(tmp_path: Path) -> None:
    for day in range(30):
        for cls in ("esp", "pcp"):
            write_day(tmp_path, day, cls)
    first = read_window(str(tmp_path), Watermark(), window_days=3)
    # no watermark: the newest day and the 3 before it, nothing older
    assert _days(first) == ["2026-03-27", "2026-03-28", "2026-03-29", "2026-03-30"]
    assert len(first.files) == 8 and first.new_rows == {"esp": 40, "pcp": 40}
    mark = first.mark.classes["esp"]
    assert mark.day == "2026-03-30" and mark.files == [
        "date=2026-03-30/pump_class=esp/part-esp-29.parquet"
    ]
    assert mark.through == (DAY0 + pd.Timedelta(days=29, minutes=9)).isoformat()

    write_day(tmp_path, 30, "esp", n=4)
    second = read_window(str(tmp_path), first.mark, window_days=3)
    # esp: the new day and the window before its watermark; pcp: nothing new, its window
    esp = sorted(f.day for f in second.files if f.pump_class == "esp")
    pcp = sorted(f.day for f in second.files if f.pump_class == "pcp")
    assert esp == ["2026-03-27", "2026-03-28", "2026-03-29", "2026-03-30", "2026-03-31"]
    assert pcp == ["2026-03-27", "2026-03-28", "2026-03-29", "2026-03-30"]
    assert second.new_rows == {"esp": 4, "pcp": 0}
    assert second.mark.classes["esp"].day == "2026-03-31"
    assert second.mark.classes["pcp"] == first.mark.classes["pcp"]


def test_old_rows_leave_the_window_so_old_episodes_stop_counting(tmp_path: Path) -> None:
    for day in range(10):
        write_day(tmp_path, day, "esp")
    w = read_window(str(tmp_path), Watermark(), window_days=2)
    ts = pd.to_datetime(w.rows["timestamp"], utc=True)
    assert ts.min() >= DAY0 + pd.Timedelta(days=9) - pd.Timedelta(days=2)
    assert sorted(w.rows["in_flow"].unique()) == [7.0, 8.0, 9.0]  # days 0-6 gone


def test_a_run_that_dies_before_its_watermark_is_read_again_in_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pumpfleet.monitoring import run as monitor
    from tests.unit.test_monitoring_run import write_log, write_snapshot

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    settings = Settings(home=tmp_path / "ws")
    write_snapshot(settings.features_dir)
    write_log(settings)
    uri = inc.watermark_uri(settings.reports_uri)

    def die(*args: object, **kwargs: object) -> None:
        raise OSError("the disk went away")

    monkeypatch.setattr(monitor, "write_reports", die)
    with pytest.raises(OSError, match="went away"):
        monitor.run_monitor(settings, trigger=False)
    assert not storage.exists(uri)  # nothing moved: the next run reads it all again
    monkeypatch.undo()
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = monitor.run_monitor(settings, trigger=False)
    assert out["read"]["new_predictions"] == {"esp": 600} and out["read"]["files"] == 1
    assert read_watermark(uri).classes["esp"].files and out["classes"]["esp"]["drifted"]
    again = monitor.run_monitor(settings, trigger=False)
    assert again["read"]["new_predictions"] == {"esp": 0}  # read, but not new


def test_the_older_layout_and_edge_uploads_are_still_read(tmp_path: Path) -> None:
    from pumpfleet.edge_ingest import store_upload
    from pumpfleet.records import PredictionRecord

    write_day(tmp_path, 0, "esp", n=5, layout="mixed")
    write_day(tmp_path, 1, "pcp", n=3, layout="mixed")
    write_day(tmp_path, 1, "esp", n=2)
    rec = PredictionRecord(
        timestamp=(DAY0 + pd.Timedelta(days=1)).value, pump_id="esp-9", pump_class="esp",
        model_version="3", rul_hours=10.0, failure_probability=0.1, request_id="edge-1",
    )  # fmt: skip
    store_upload(str(tmp_path), "rig-7", "b1", [rec])
    w = read_window(str(tmp_path), Watermark(), window_days=400)
    assert w.rows.groupby("pump_class").size().to_dict() == {"esp": 8, "pcp": 3}
    assert {f.name for f in w.files if f.pump_class is None} >= {"edge/rig-7/b1.parquet"}
    assert w.new_rows == {"esp": 8, "pcp": 3}
    again = read_window(str(tmp_path), w.mark, window_days=400)
    assert again.new_rows == {"esp": 0, "pcp": 0}


def test_a_bad_file_is_noted_and_the_others_are_read(tmp_path: Path) -> None:
    write_day(tmp_path, 0, "esp")
    storage.write_bytes(tmp_path / "date=2026-03-01/pump_class=esp/part-bad.parquet", b"junk")
    w = read_window(str(tmp_path), Watermark(), window_days=3)
    assert len(w.rows) == 10 and len(w.notes) == 1 and "part-bad.parquet" in w.notes[0]
    assert w.mark.classes["esp"].files == ["date=2026-03-01/pump_class=esp/part-esp-0.parquet"]


def test_a_watermark_that_cannot_be_read_starts_afresh(tmp_path: Path) -> None:
    uri = str(tmp_path / "wm.json")
    storage.write_bytes(uri, b"{not json")
    assert read_watermark(uri) == Watermark()


@pytest.fixture(scope="module")
def server() -> Iterator[S3Server]:
    with s3_server() as s:
        s.create_bucket("pumpfleet-inc")
        yield s


def test_the_window_and_the_watermark_on_s3(
    server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_s3(monkeypatch, server)
    root = "s3://pumpfleet-inc/predictions"
    for day in range(6):
        write_day(root, day, "esp")
    w = read_window(root, Watermark(), window_days=1)
    assert _days(w) == ["2026-03-05", "2026-03-06"] and w.new_rows == {"esp": 20}
    uri = inc.watermark_uri("s3://pumpfleet-inc/reports")
    inc.write_watermark(uri, w.mark)
    assert read_watermark(uri) == w.mark
    write_day(root, 6, "esp", n=3)
    assert read_window(root, read_watermark(uri), window_days=1).new_rows == {"esp": 3}
    get_settings.cache_clear()
