"""The whole loop at fleet size on this machine: ingest → train → batch scoring of every
window → monitor, with the time, peak memory and throughput per core of each stage.

    python -m benchmarks.fleet [--pumps 2000] [--days 60] [--epochs 1] [--cpus 2]

The fleet is simulated first (hourly readings; timed, not a stage). Stages:

- **ingest**: ``ray_jobs.ingest.run_ingest`` (the job's public entry) on a local Ray of
  ``--cpus`` CPUs: validation, regimes, labelled windows, the snapshot.
- **train**: one trial per class, small: :func:`pumpfleet.training.fit` (the function each
  Tune trial runs) of a cnn for ``--epochs`` on the class's train windows, exported to
  ONNX as the registry stores it.
- **score**: every window of the snapshot (all splits) through
  :func:`pumpfleet.scoring.score_windows` with the class's ONNX model (the batch path),
  into prediction-log rows (:func:`pumpfleet.features.window_summary` and the settings'
  means), written partitioned by day and class.
- **monitor**: a monitor run from an empty watermark over the log's last 60 days
  (:func:`pumpfleet.monitoring.incremental.read_window`), and the fleet drift method
  (:mod:`pumpfleet.fleet_drift`) per class in daily chunks, its reference the first third
  of the days.

Peak memory: the summed RSS of this process and every process it started (Ray's
included), sampled every 0.2 s. Throughput per core: the stage's units per CPU second
(its CPU time: this process's and, for ingest, Ray's processes once it shuts down), what
a busy core delivers whatever else shares the machine; and, beside it, per wall second
over ``--cpus`` (torch and onnxruntime are given as many threads). Ends with
``pumps=<n> rows=<n> total_s=<s> peak_gb=<gb>`` (total: the four stages).
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks._local_ray import local_ray
from benchmarks.ingest import MemorySampler
from pumpfleet import fleet_drift, onnx_io, runtime
from pumpfleet.features import FeatureSpec, window_summary
from pumpfleet.monitoring.incremental import Watermark, read_window
from pumpfleet.predlog import by_class
from pumpfleet.runtime import Runner
from pumpfleet.scoring import score_windows
from pumpfleet.settings import Settings, quiet_telemetry
from pumpfleet.simulator import SimulationConfig, simulate
from pumpfleet.snapshot import Snapshot, open_snapshot
from pumpfleet.tables import format_table
from pumpfleet.windows import SPLITS, WindowConfig

log = logging.getLogger(__name__)
SCORE_BATCH = 8192


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    waited = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + waited.ru_utime + waited.ru_stime


def measured(name: str, fn: Callable[[], Any], out: dict[str, dict[str, Any]]) -> Any:
    """Run ``fn`` as stage ``name``: its wall time, CPU time (this process's and that of
    the processes it started and reaped: Ray's, once it shuts down) and peak memory."""
    with MemorySampler(os.getpid()) as mem:
        t, cpu = time.perf_counter(), _cpu_seconds()
        result = fn()
        seconds, cpu = time.perf_counter() - t, _cpu_seconds() - cpu
    out[name] = {"s": seconds, "cpu_s": cpu, "peak_bytes": mem.peak_rss}
    return result


def ingest(source: Path, features: Path, cpus: int) -> dict[str, Any]:
    from ray_jobs.ingest import run_ingest

    quiet_telemetry(Settings())
    with local_ray(cpus, progress_bars=False):
        return run_ingest(str(source), str(features), WindowConfig())


def train_class(snap: Snapshot, cls: str, epochs: int, threads: int) -> Runner:
    """One small trial of one class: a cnn fitted on its train windows, as ONNX."""
    import torch

    from pumpfleet.models import ModelConfig
    from pumpfleet.training import TrainConfig, fit
    from pumpfleet.training_run import class_arrays

    torch.set_num_threads(threads)
    spec = snap.spec(cls)
    cfg = TrainConfig(model=ModelConfig(hidden=16), epochs=epochs, batch_size=512)
    model, _ = fit(class_arrays(snap, cls, "train"), class_arrays(snap, cls, "val"), spec, cfg)
    return runtime.onnx_runner(onnx_io.to_onnx(model, spec.window, spec.n_channels), threads)


def log_frame(
    raw: np.ndarray, spec: FeatureSpec, run: Runner, keys: dict[str, np.ndarray]
) -> pd.DataFrame:
    """Prediction-log rows of windows ``raw`` scored through the batch path: the scores,
    each channel's and setting's window mean (``in_*``), pump, site and the window's end."""
    parts = []
    for i in range(0, len(raw), SCORE_BATCH):
        w = raw[i : i + SCORE_BATCH]
        rul = score_windows(w, spec, run).rul
        cols = window_summary(w, spec) | fleet_drift.setting_means(w, spec)
        part = pd.DataFrame({f"in_{k}": v for k, v in cols.items()})
        part["rul_hours"] = rul.rul_hours
        part["failure_probability"] = rul.failure_probability
        parts.append(part)
    out = pd.concat(parts, ignore_index=True)
    out["pump_id"] = np.asarray(keys["pump_id"]).astype(str)
    if "site" in keys:
        out["site"] = np.asarray(keys["site"]).astype(str)
    out["pump_class"] = spec.pump_class
    out["timestamp"] = pd.to_datetime(keys["end_time"], utc=True)
    return out


def score_snapshot(snap: Snapshot, runners: dict[str, Runner]) -> dict[str, pd.DataFrame]:
    out = {}
    for cls, run in runners.items():
        spec = snap.spec(cls)
        frames = []
        for split in SPLITS:
            raw, cols = snap.load(cls, split)
            if len(raw):
                frames.append(log_frame(raw, spec, run, cols))
        out[cls] = pd.concat(frames, ignore_index=True).sort_values("timestamp")
    return out


def write_log(frames: dict[str, pd.DataFrame], root: Path) -> int:
    """The rows in the prediction log's layout, one file per day and class."""
    files = 0
    for frame in frames.values():
        days = frame["timestamp"].dt.strftime("%Y-%m-%d")
        for day, rows in frame.groupby(days):
            table = pa.Table.from_pandas(
                rows.drop(columns="site", errors="ignore"), preserve_index=False
            )
            for folder, part in by_class(table):
                path = root / f"date={day}" / Path(*folder)
                path.mkdir(parents=True, exist_ok=True)
                pq.write_table(part, path / "part-0.parquet")
                files += 1
    return files


def fleet_reference_and_signals(
    rows: pd.DataFrame, spec: FeatureSpec, sites: pd.Series, ref_days: int,
    cfg: fleet_drift.FleetDriftConfig | None = None,
) -> pd.DataFrame:  # fmt: skip
    """The fleet method on one class's log rows: reference the first ``ref_days`` days,
    then a daily chunk each later day."""
    frame = rows.rename(columns=lambda c: c.removeprefix("in_"))
    frame["site"] = sites.reindex(frame["pump_id"].astype(str)).to_numpy()
    ts = pd.to_datetime(frame["timestamp"], utc=True)
    cut = ts.min().floor("D") + pd.Timedelta(days=ref_days)
    regimes = spec.regimes
    center = np.asarray(regimes.center) if regimes else None
    scale = np.asarray(regimes.scale) if regimes else None
    ref = fleet_drift.fit_reference(
        frame[ts < cut], spec.channels, spec.settings, center, scale, cfg
    )
    return fleet_drift.analyse_fleet(frame[ts >= cut], ref, cfg)


def monitor(root: Path, snap: Snapshot, sites: pd.Series, days: int) -> dict[str, Any]:
    window = read_window(str(root), Watermark(), window_days=days)
    alerts = {}
    for cls, rows in window.rows.groupby("pump_class"):
        signals = fleet_reference_and_signals(rows, snap.spec(str(cls)), sites, max(8, days // 3))
        alerts[str(cls)] = fleet_drift.first_alerts(signals, 2)
    return {"rows": len(window.rows), "files": len(window.files), "alerts": alerts}


def _sites(source: Path) -> pd.Series:
    t = pq.read_table(source / "readings", columns=["pump_id", "site"]).to_pandas()
    return t.drop_duplicates("pump_id").set_index("pump_id")["site"].astype(str)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.fleet", description=__doc__)
    p.add_argument("--pumps", type=int, default=2000)
    p.add_argument("--days", type=int, default=60)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--cpus", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")
    stages: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        base = Path(tmp)
        source, features, logdir = base / "fleet", base / "features", base / "predictions"
        cfg = SimulationConfig(pumps=args.pumps, days=args.days, seed=args.seed)
        sim = measured("simulate", lambda: simulate(cfg, str(source)), stages)
        rows = int(sim["readings"])
        summary = measured("ingest", lambda: ingest(source, features, args.cpus), stages)
        snap = open_snapshot(str(features), summary["snapshot_id"])
        classes = sorted(snap.classes)
        runners = measured(
            "train", lambda: {c: train_class(snap, c, args.epochs, args.cpus) for c in classes},
            stages,
        )  # fmt: skip
        frames = measured("score", lambda: score_snapshot(snap, runners), stages)
        windows = sum(len(f) for f in frames.values())
        train_windows = sum(len(snap.load(c, "train")[0]) for c in classes)
        sites = _sites(source)
        files = write_log(frames, logdir)
        del frames
        mon = measured("monitor", lambda: monitor(logdir, snap, sites, args.days), stages)
    units = {
        "simulate": (rows, "readings"),
        "ingest": (rows, "readings"),
        "train": (train_windows * args.epochs, "window-epochs"),
        "score": (windows, "windows"),
        "monitor": (mon["rows"], "logged rows"),
    }
    table = []
    for name, st in stages.items():
        n, unit = units[name]
        per_cpu, per_wall = n / max(st["cpu_s"], 1e-9), n / st["s"] / args.cpus
        table.append([name, f"{st['s']:.1f}", f"{st['cpu_s']:.1f}",
                      f"{st['peak_bytes'] / 2**30:.2f}", f"{n:,} {unit}",
                      f"{per_cpu:,.0f}", f"{per_wall:,.0f}"])  # fmt: skip
    total = sum(st["s"] for n, st in stages.items() if n != "simulate")
    peak = max(st["peak_bytes"] for n, st in stages.items() if n != "simulate") / 2**30
    print(
        f"{args.pumps} pumps x {args.days} days, hourly ({rows:,} readings; {len(classes)} "
        f"classes), {args.cpus} CPUs; log: {files} files; drift alerts on this no-drift "
        f"fleet (2 days in a row): {sum(len(a) for a in mon['alerts'].values())}"
    )
    headers = ["stage", "wall s", "CPU s", "peak GB", "work", "per CPU s", "per core, wall"]
    print(format_table(headers, table))
    print(f"pumps={args.pumps} rows={rows} total_s={total:.1f} peak_gb={peak:.2f}")


if __name__ == "__main__":
    main()
