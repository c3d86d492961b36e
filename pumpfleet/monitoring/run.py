"""The monitor's run, from the prediction log to triggers and reports: every class with
enough predictions is analysed against its reference (drift of the inputs, the champion's
estimated and realised performance, the anomaly champion's alarm rate and score drift),
alerts go through hysteresis, and retraining is submitted for the classes whose drift
alerts (or, with ``new_data_rows``, that have enough new data). Writes an HTML report with
the fleet drift map, the map as PNG, a JSON summary, the per-chunk signals as Parquet,
and MLflow metrics.

Each run reads only the prediction log's partitions since each class's watermark and the
rolling window before it (:mod:`pumpfleet.monitoring.incremental`), and moves the
watermark once its reports are written.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from pumpfleet import storage
from pumpfleet.alerts import AlertPolicy, drift_wanted, hysteresis, new_data_due
from pumpfleet.drift import AnalysisConfig, ClassAnalysis, analyse_class
from pumpfleet.errors import PumpfleetError
from pumpfleet.job_options import JOBS_ADDRESS_OPTION
from pumpfleet.monitoring.daily import fleet_daily
from pumpfleet.monitoring.incremental import (
    WINDOW_DAYS,
    Watermark,
    read_watermark,
    read_window,
    watermark_uri,
    write_watermark,
)
from pumpfleet.monitoring.reference import analysis_frame, class_reference
from pumpfleet.monitoring.report import class_png, drift_map_png, report_html
from pumpfleet.monitoring.summary import class_meta, class_summary
from pumpfleet.registry import Registry
from pumpfleet.settings import Settings
from pumpfleet.snapshot import open_snapshot
from pumpfleet.triggers import RetrainServer, rows_since, start_retrains

log = logging.getLogger(__name__)

EXPERIMENT = "pumpfleet-monitor"

FIGURE = "figure_png"  # a class's report figure in its outcome's meta (not in the summary)
ClassInput = tuple[pd.DataFrame, pd.DataFrame]  # a class's logged rows, their feedback
# A class's analysis and what its summary needs besides, or why it was skipped.
ClassOutcome = tuple[ClassAnalysis, dict[str, Any]] | str
AnalyseClasses = Callable[
    [Settings, str, Mapping[str, ClassInput], AnalysisConfig], Mapping[str, ClassOutcome]
]


def analyse_one(
    settings: Settings,
    snapshot: str,
    cls: str,
    rows: pd.DataFrame,
    feedback: pd.DataFrame,
    cfg: AnalysisConfig,
) -> ClassOutcome:
    """One class's analysis against its reference, or why it was skipped; its report
    figure (PNG) is drawn here too, under ``meta[FIGURE]``, so that classes analysed in
    parallel draw theirs in parallel."""
    try:
        ref = class_reference(settings, snapshot, cls)
        analysis = analysis_frame(rows, feedback, ref)
        result = analyse_class(cls, ref.drift, analysis, ref.features, cfg, ref.perf, ref.health)
    except PumpfleetError as e:
        return str(e)
    meta = class_meta(cls, ref, rows, analysis)
    result.notes = ref.notes + result.notes
    if cfg.fleet_daily:
        snap = open_snapshot(settings.features_uri, ref.snapshot)
        meta["fleet_daily"] = fleet_daily(snap, cls, snap.spec(cls), rows)
    meta[FIGURE] = class_png(result)
    return result, meta


def analyse_in_process(
    settings: Settings, snapshot: str, inputs: Mapping[str, ClassInput], cfg: AnalysisConfig
) -> dict[str, ClassOutcome]:
    """Every class's :func:`analyse_one`, one after the other in this process."""
    return {c: analyse_one(settings, snapshot, c, r, f, cfg) for c, (r, f) in inputs.items()}


def _usable(logged: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The rows the monitor can analyse, and a note for each kind it cannot."""
    notes = []
    missing = [c for c in ("pump_class", "timestamp") if c not in logged]
    if missing:
        notes.append(
            f"the prediction log has no {', '.join(missing)} column: written by an older "
            "version; nothing analysed"
        )
        return logged.iloc[:0], notes
    inputs = [c for c in logged if str(c).startswith("in_")]
    old = logged[inputs].isna().all(axis=1) if inputs else pd.Series(True, index=logged.index)
    if old.any():
        notes.append(
            f"{int(old.sum())} logged predictions carry no input summaries (in_* columns; "
            "an older version's log): left out of the analysis"
        )
    return logged[~old], notes


def run_monitor(
    settings: Settings,
    snapshot: str = "latest",
    chunk_size: int = 50,
    min_alert_chunks: int = 2,
    *,
    policy: AlertPolicy | None = None,
    server: RetrainServer | None = None,
    trigger: bool = True,
    now: datetime | None = None,
    std_multiplier: float | None = None,
    analyse: AnalyseClasses = analyse_in_process,
    window_days: int = WINDOW_DAYS,
    daily_fleet: bool = False,
) -> dict[str, Any]:
    """Analyse every class with enough predictions (``analyse`` runs the classes: here,
    one after the other; the Ray job, as parallel tasks); alerts need
    ``min_alert_chunks`` drifted chunks in a row (``policy.consecutive`` when a policy is
    given); retrains go to ``server`` when ``trigger`` (None: no job server, which the
    summary notes). Each class's predictions are those of its last ``window_days`` (read
    from its watermark on, see :mod:`pumpfleet.monitoring.incremental`); ``daily_fleet``
    adds each class's daily fleet signals (:mod:`pumpfleet.monitoring.daily`)."""
    policy = policy or AlertPolicy(consecutive=min_alert_chunks, clear_after=min_alert_chunks)
    now = now or datetime.now(UTC)
    cfg = AnalysisConfig(chunk_size=chunk_size)
    if std_multiplier is not None:
        cfg = AnalysisConfig(chunk_size=chunk_size, std_multiplier=std_multiplier)
    cfg = replace(cfg, fleet_daily=daily_fleet)
    mark_uri = watermark_uri(settings.reports_uri)
    window = read_window(settings.predictions_uri, read_watermark(mark_uri), window_days)
    logged = window.rows
    feedback = read_window(f"{settings.predictions_uri}-feedback", Watermark(), window_days).rows
    summary: dict[str, Any] = {
        "created": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "predictions": len(logged),
        "chunk_size": chunk_size,
        "std_multiplier": cfg.std_multiplier,
        "drift_thresholds": cfg.thresholds(),
        "policy": policy.model_dump(),
        "classes": {},
        "skipped": {},
        "notes": [],
        "triggers": [],
        "drifted_classes": [],
        "alerting_classes": [],
        "health_alerting_classes": [],
        "read": {
            "window_days": window_days,
            "files": len(window.files),
            "new_predictions": window.new_rows,
        },
    }
    summary["notes"] += window.notes
    if logged.empty:
        msg = f"no predictions logged under {settings.predictions_uri}; nothing to monitor"
        log.warning(msg)
        return write_reports(settings, {**summary, "status": "empty", "snapshot_id": None}, {}, msg)
    usable, notes = _usable(logged)
    summary["notes"] += notes
    snap = open_snapshot(settings.features_uri, snapshot)
    summary["snapshot_id"] = snap.id
    inputs: dict[str, ClassInput] = {}
    for cls, rows in usable.groupby("pump_class") if not usable.empty else []:
        cls = str(cls)
        if cls not in snap.classes:
            summary["skipped"][cls] = "no reference data for this class"
        elif len(rows) < chunk_size:
            summary["skipped"][cls] = f"{len(rows)} predictions, fewer than a chunk ({chunk_size})"
        else:
            fb = feedback
            if not fb.empty:
                fb = fb[fb["pump_id"].isin(rows["pump_id"])]
            inputs[cls] = (rows, fb)
    results: dict[str, ClassAnalysis] = {}
    figures: dict[str, bytes] = {}
    outs = analyse(settings, snap.id, inputs, cfg) if inputs else {}
    for cls in inputs:
        out = outs[cls]
        if isinstance(out, str):
            summary["skipped"][cls] = out
            log.warning("%s: %s", cls, out)
            continue
        result, meta = out
        results[cls] = result
        if FIGURE in meta:
            figures[cls] = meta.pop(FIGURE)
        summary["classes"][cls] = class_summary(result, policy, meta)
    for m in summary["skipped"].values():
        log.warning(m)
    alerts = {c: hysteresis(c, r.drifted(), policy) for c, r in results.items()}
    summary["drifted_classes"] = sorted(c for c, a in alerts.items() if a.episodes)
    summary["alerting_classes"] = sorted(c for c, a in alerts.items() if a.active)
    # Reported, never retrained on by themselves: a rise in alarms may be real faults.
    summary["health_alerting_classes"] = sorted(
        c for c, s in summary["classes"].items() if s["health"] and s["health"]["alert_active"]
    )
    wanted = drift_wanted(alerts, {c: s["drifted_features"] for c, s in summary["classes"].items()})
    if policy.new_data_rows is not None:
        # against each champion's own snapshot: rows that arrived, ingested or not, since
        # the data it was trained on
        since: dict[str, int] = {}
        for cls in snap.classes:
            ref = summary["classes"].get(cls, {}).get("reference_snapshot") or snap.id
            if ref not in since:
                since[ref] = _rows_since(settings, ref)
            if new_data_due(since[ref], 0, policy):
                wanted.setdefault(cls, f"new data: {since[ref]} rows since snapshot {ref}")
    if trigger:
        fired = start_retrains(settings, wanted, policy, now, server)
        summary["triggers"] = fired["triggers"]
        if fired["message"]:
            summary["notes"].append(fired["message"])
        if wanted and server is None:
            summary["notes"].append(
                f"retraining wanted for {', '.join(sorted(wanted))} but not submitted: no Ray "
                f"job server ({JOBS_ADDRESS_OPTION} or PUMPFLEET_JOBS_ADDRESS)"
            )
    else:
        summary["triggers"] = [
            {"pump_class": c, "start": False, "reason": f"{w}; triggers off"}
            for c, w in wanted.items()
        ]
    reported = write_reports(settings, {**summary, "status": "ok"}, results, None, figures)
    write_watermark(mark_uri, window.mark)  # last: a run that dies before it is repeated
    return reported


def _rows_since(settings: Settings, snapshot: str) -> int:
    try:
        snap = open_snapshot(settings.features_uri, snapshot)
        return rows_since(snap, settings.data_uri)
    except (OSError, PumpfleetError) as e:
        log.warning("could not count the rows since snapshot %s: %s", snapshot, e)
        return 0


def write_reports(
    settings: Settings,
    summary: dict[str, Any],
    results: dict[str, ClassAnalysis],
    msg: str | None,
    figures: Mapping[str, bytes] | None = None,
) -> dict[str, Any]:
    """The summary as JSON (and, with results, the HTML report with the classes'
    ``figures``, the drift map, the per-chunk signals and an MLflow run) under the
    workspace's reports."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    reports = settings.reports_uri
    summary["message"] = msg
    for n in (f"drift-{stamp}.json", "drift-latest.json"):
        storage.write_json(storage.join(reports, n), summary)
    if not results:
        return {**summary, "report": None, "drift_map": None}
    png = drift_map_png(results)
    report = storage.join(reports, f"drift-{stamp}.html")
    drift_map = storage.join(reports, f"drift-map-{stamp}.png")
    storage.write_bytes(report, report_html(summary, results, png, figures).encode())
    storage.write_bytes(drift_map, png)
    storage.write_bytes(storage.join(reports, "drift-map-latest.png"), png)
    chunks = pd.concat([r.chunks.assign(pump_class=c) for c, r in results.items()])
    storage.write_bytes(storage.join(reports, f"drift-{stamp}-chunks.parquet"), chunks.to_parquet())
    run_id = _log_mlflow(settings, summary, report, drift_map)
    return {**summary, "report": report, "drift_map": drift_map, "mlflow_run_id": run_id}


def _log_mlflow(settings: Settings, summary: dict[str, Any], report: str, png: str) -> str | None:
    registry = Registry(settings.tracking_uri, settings.artifact_root)
    run_id = registry.start_run(
        EXPERIMENT,
        f"monitor-{summary['created']}",
        params={"chunk_size": summary["chunk_size"], **summary["policy"]},
        tags={"feature_snapshot": str(summary["snapshot_id"])},
    )
    metrics: dict[str, Any] = {}
    for cls, s in summary["classes"].items():
        metrics |= {
            f"{cls}.alert": float(s["alert_active"]),
            f"{cls}.drifted_chunks": s["drifted_chunks"],
            f"{cls}.chunks": s["chunks"],
            **{f"{cls}.estimated_{k}": v for k, v in s["estimated"].items()},
            **{f"{cls}.realised_{k}": v for k, v in s["realised"].items()},
        }
        if s["health"]:
            h = s["health"]
            metrics[f"{cls}.health_alert"] = float(h["alert_active"])
            metrics[f"{cls}.health_alarm_rate_chunks"] = h["alarm_rate_chunks"]
            if h["alarm_rate"] is not None:
                metrics[f"{cls}.alarm_rate"] = h["alarm_rate"]
    registry.log_metrics(run_id, metrics)
    if not storage.is_remote(report):
        for p in (report, png):
            registry.log_artifact(run_id, Path(p), "monitor")
    registry.end_run(run_id)
    return run_id
