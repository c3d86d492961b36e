"""Drift of the served inputs against the training reference, per pump class, with
NannyML; the classes run as parallel Ray tasks. Writes an HTML report and a JSON summary.

    python -m ray_jobs.monitor [--chunk-size N]
"""

from __future__ import annotations

import argparse
import html
import logging
import time
from typing import Any

import numpy as np
import pandas as pd
import ray

from pumpfleet import storage
from pumpfleet.drift import DriftMonitor, DriftResult
from pumpfleet.errors import DataError
from pumpfleet.features import window_summary
from pumpfleet.predlog import read_log
from pumpfleet.settings import Settings, get_settings
from pumpfleet.snapshot import open_snapshot
from pumpfleet.windows import SPLITS
from ray_jobs._ray import init_ray
from ray_jobs.cli import run_main

log = logging.getLogger(__name__)


def reference_frame(features_root: str, snapshot: str, cls: str) -> pd.DataFrame:
    """Window summaries of every window of the class in the snapshot: what the fleet's
    pumps (all of them are in service, whatever their split) produced when the model
    was built.

    The rows are shuffled (seeded) under a sorted time axis, so that each reference chunk
    is a random sample of the training distribution: NannyML sets its alert threshold
    from the spread of the statistic over reference chunks, and time-ordered chunks
    (each one regime's slice of history) would set it wide enough to miss a 15 % sensor
    shift. An analysis chunk is then tested against sampling noise alone.
    """
    snap = open_snapshot(features_root, snapshot)
    spec = snap.spec(cls)
    parts = [snap.load(cls, split) for split in SPLITS]
    raw = np.concatenate([p[0] for p in parts])
    end_time = np.concatenate([p[1]["end_time"] for p in parts])
    frame = pd.DataFrame(window_summary(raw, spec))
    order = np.random.default_rng(0).permutation(len(frame))
    frame = frame.iloc[order].reset_index(drop=True)
    frame["timestamp"] = np.sort(pd.to_datetime(end_time, utc=True))
    return frame


@ray.remote(num_cpus=1)
def _drift_task(
    features_root: str,
    snapshot: str,
    cls: str,
    analysis: pd.DataFrame,
    chunk_size: int,
    min_alert_chunks: int,
) -> DriftResult:
    ref = reference_frame(features_root, snapshot, cls)
    features = list(ref.columns.drop("timestamp"))
    monitor = DriftMonitor(features, chunk_size=chunk_size, min_alert_chunks=min_alert_chunks)
    return monitor.run(cls, ref, analysis, with_plot=True)


def run_monitor(
    settings: Settings, snapshot: str = "latest", chunk_size: int = 50, min_alert_chunks: int = 2
) -> dict[str, Any]:
    """Drift per class of the logged inputs; a feature counts as drifted when it alerts
    in at least ``min_alert_chunks`` chunks (one alerting chunk in ~20 tests is noise)."""
    logged = read_log(str(settings.predictions_dir))
    if logged.empty:
        raise DataError(
            f"no predictions logged under {settings.predictions_dir}; serve some requests first"
        )
    snap = open_snapshot(str(settings.features_dir), snapshot)
    tasks = {}
    skipped: dict[str, str] = {}
    for cls, rows in logged.groupby("pump_class"):
        cls = str(cls)
        if cls not in snap.classes:
            skipped[cls] = "no reference data for this class"
            continue
        if len(rows) < chunk_size:
            skipped[cls] = f"{len(rows)} predictions logged, fewer than one chunk ({chunk_size})"
            continue
        analysis = rows.rename(columns=lambda c: c.removeprefix("in_"))
        analysis["timestamp"] = pd.to_datetime(analysis["timestamp"], utc=True)
        analysis = analysis.sort_values("timestamp").reset_index(drop=True)
        tasks[cls] = _drift_task.remote(
            str(settings.features_dir), snap.id, cls, analysis, chunk_size, min_alert_chunks
        )
    results: dict[str, DriftResult] = dict(zip(tasks, ray.get(list(tasks.values())), strict=True))
    summary = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "snapshot_id": snap.id,
        "predictions": len(logged),
        "chunk_size": chunk_size,
        "min_alert_chunks": min_alert_chunks,
        "classes": {
            cls: {
                "drifted": r.drifted,
                "drifted_features": r.drifted_features,
                "analysis_rows": r.analysis_rows,
                "reference_rows": r.reference_rows,
                "features": {f: vars(d) for f, d in r.features.items()},
            }
            for cls, r in sorted(results.items())
        },
        "skipped": skipped,
        "drifted_classes": sorted(c for c, r in results.items() if r.drifted),
    }
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    report = storage.join(str(settings.reports_dir), f"drift-{stamp}.html")
    storage.write_bytes(report, _html(summary, results).encode())
    storage.write_json(storage.join(str(settings.reports_dir), f"drift-{stamp}.json"), summary)
    storage.write_json(storage.join(str(settings.reports_dir), "drift-latest.json"), summary)
    return {**summary, "report": report}


def _html(summary: dict[str, Any], results: dict[str, DriftResult]) -> str:
    from plotly.offline import get_plotlyjs

    rows = "".join(
        f"<tr><td>{html.escape(c)}</td><td>{'DRIFT' if r.drifted else 'ok'}</td>"
        f"<td>{html.escape(', '.join(r.drifted_features) or '-')}</td>"
        f"<td>{r.analysis_rows}</td><td>{r.reference_rows}</td></tr>"
        for c, r in sorted(results.items())
    )
    figures = "".join(
        f"<h2>{html.escape(c)}</h2>{r.figure_html}" for c, r in sorted(results.items())
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>pumpfleet drift</title>"
        f"<script>{get_plotlyjs()}</script></head><body>"
        f"<h1>pumpfleet drift report</h1><p>{summary['created']} · snapshot "
        f"{summary['snapshot_id']} · {summary['predictions']} predictions · chunk "
        f"{summary['chunk_size']} · Kolmogorov-Smirnov per window-mean feature</p>"
        "<table border='1' cellpadding='4'><tr><th>class</th><th>verdict</th>"
        f"<th>drifted features</th><th>served</th><th>reference</th></tr>{rows}</table>"
        f"{figures}</body></html>"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ray_jobs.monitor", description=__doc__)
    parser.add_argument("--snapshot", default="latest")
    parser.add_argument("--chunk-size", type=int, default=50)
    parser.add_argument("--min-alert-chunks", type=int, default=2)
    args = parser.parse_args(argv)

    def job() -> dict[str, Any]:
        settings = get_settings()
        init_ray(settings)
        return run_monitor(settings, args.snapshot, args.chunk_size, args.min_alert_chunks)

    return run_main(job)


if __name__ == "__main__":
    raise SystemExit(main())
