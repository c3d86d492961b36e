"""The monitor's cost per run as its prediction log grows: flat, since a run reads only
the partitions since each class's watermark and the rolling window before it.

    python -m benchmarks.monitor_incremental [--days 20] [--rows-per-day 500]
                                             [--window-days 14] [--repeats 3]

Three logs of 4 classes, ``--rows-per-day`` rows per class and day written in the
monitor's layout (``date=<day>/pump_class=<class>/``): ``--days`` (1x), 10x and 30x as
many days. On each, the monitor has run up to the day before the last (its watermark);
the measured run reads the log from that watermark (:func:`read_window`: the new day
and the window), analyses each class's window as the monitor does (univariate and PCA
drift against a reference, :func:`pumpfleet.drift.analyse_class`) and writes the next
watermark. The baseline, in the same run: reading the whole log as the monitor did
before (:func:`pumpfleet.predlog.read_log`). Each figure is the median of ``--repeats``.
Ends with ``cost_30x_vs_1x=<ratio>`` (the incremental run's; target <= 1.5).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pumpfleet.drift import AnalysisConfig, analyse_class, shuffled_reference
from pumpfleet.monitoring.incremental import (
    Watermark,
    read_window,
    watermark_uri,
    write_watermark,
)
from pumpfleet.predlog import read_log
from pumpfleet.schema import PUMP_CLASSES
from pumpfleet.tables import format_table

FEATURES = 4
START = pd.Timestamp("2026-01-01", tz="UTC")
SCALES = (1, 10, 30)


def _day_frame(cls: str, day: int, n: int, rng: np.random.Generator) -> pa.Table:
    ts = START + pd.Timedelta(days=day) + pd.to_timedelta(np.arange(n) * (86_400 / n), unit="s")
    cols: dict[str, Any] = {
        "request_id": [f"{cls}-{day}-{i}" for i in range(n)],
        "timestamp": ts.to_numpy(),
        "pump_id": [f"{cls}-{i % 50:03d}" for i in range(n)],
        "pump_class": [cls] * n,
        "rul_hours": rng.uniform(0, 168, n),
        "failure_probability": rng.uniform(0, 1, n),
    }
    cols |= {f"in_f{j}": rng.normal(0, 1, n) for j in range(FEATURES)}
    return pa.table(cols)


def write_log(root: Path, days: int, rows_per_day: int) -> int:
    rng = np.random.default_rng(days)
    for day in range(days):
        stamp = (START + pd.Timedelta(days=day)).date().isoformat()
        for cls in PUMP_CLASSES:
            folder = root / f"date={stamp}" / f"pump_class={cls}"
            folder.mkdir(parents=True, exist_ok=True)
            pq.write_table(_day_frame(cls, day, rows_per_day, rng), folder / "part-0.parquet")
    return days * rows_per_day * len(PUMP_CLASSES)


def _reference() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    f = pd.DataFrame({f"f{j}": rng.normal(0, 1, 5_000) for j in range(FEATURES)})
    f["timestamp"] = START - pd.to_timedelta(np.arange(5_000), unit="min")
    return shuffled_reference(f)


def monitor_once(
    root: Path, reports: Path, mark: Watermark, window_days: int, chunk: int
) -> dict[str, Any]:
    """One run: read from the watermark, analyse each class's window, move the mark."""
    t = time.perf_counter()
    window = read_window(str(root), mark, window_days)
    read_s = time.perf_counter() - t
    ref, feats = _reference(), [f"f{j}" for j in range(FEATURES)]
    cfg = AnalysisConfig(chunk_size=chunk, performance=False)
    chunks = 0
    for cls, rows in window.rows.groupby("pump_class"):
        a = rows.rename(columns=lambda c: c.removeprefix("in_")).sort_values("timestamp")
        chunks += len(analyse_class(str(cls), ref, a, feats, cfg).drifted())
    write_watermark(watermark_uri(str(reports)), window.mark)
    return {
        "s": time.perf_counter() - t,
        "read_s": read_s,
        "files": len(window.files),
        "rows": len(window.rows),
        "new": sum(window.new_rows.values()),
        "chunks": chunks,
    }


def measure(days: int, rows_per_day: int, window_days: int, repeats: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-monitor-inc-") as tmp:
        root, reports = Path(tmp) / "predictions", Path(tmp) / "reports"
        total = write_log(root, days, rows_per_day)
        last = root / f"date={(START + pd.Timedelta(days=days - 1)).date().isoformat()}"
        held = Path(tmp) / "held"
        last.rename(held)  # the monitor ran before the last day arrived
        before = read_window(str(root), Watermark(), window_days).mark
        held.rename(last)
        chunk = max(50, rows_per_day // 4)  # 4 chunks a day
        runs = [monitor_once(root, reports, before, window_days, chunk) for _ in range(repeats)]
        full = []
        for _ in range(repeats):
            t = time.perf_counter()
            n = len(read_log(str(root)))
            full.append(time.perf_counter() - t)
        assert n == total
    pick = sorted(runs, key=lambda r: r["s"])[len(runs) // 2]
    return {"days": days, "log_rows": total, **pick, "full_read_s": statistics.median(full)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.monitor_incremental", description=__doc__
    )
    p.add_argument("--days", type=int, default=20, help="the 1x log's days (more than the window)")
    p.add_argument("--rows-per-day", type=int, default=500, help="per class")
    p.add_argument("--window-days", type=int, default=14)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")
    out = [
        measure(args.days * k, args.rows_per_day, args.window_days, args.repeats) for k in SCALES
    ]
    base = out[0]
    rows = [
        [
            f"{k}x", r["days"], f"{r['log_rows']:,}", r["files"], f"{r['rows']:,}", f"{r['new']:,}",
            f"{r['read_s']:.2f}", f"{r['s']:.2f}", f"{r['s'] / base['s']:.2f}",
            f"{r['full_read_s']:.2f}", f"{r['full_read_s'] / base['full_read_s']:.1f}",
        ]
        for k, r in zip(SCALES, out, strict=True)
    ]  # fmt: skip
    print(
        f"One monitor run after the watermark (4 classes, {args.rows_per_day} rows per class "
        f"and day, window {args.window_days} days, median of {args.repeats}); baseline: "
        "reading the whole log, as the monitor did before"
    )
    headers = ["log", "days", "log rows", "files read", "rows analysed", "new rows",
               "read s", "run s", "run vs 1x", "whole-log read s", "vs 1x"]  # fmt: skip
    print(format_table(headers, rows))
    print(f"cost_30x_vs_1x={out[-1]['s'] / base['s']:.2f}")


if __name__ == "__main__":
    main()
