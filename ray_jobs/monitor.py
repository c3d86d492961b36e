"""The monitor: drift of the served inputs and the champion's performance, per pump
class (classes as parallel Ray tasks), against the data the champion was validated on;
the anomaly (health) champion's alarm rate and score drift where a class has one; what
drives the champion's flags; alerts with hysteresis; retraining submitted for the classes
whose drift alerts. Writes an HTML report with the fleet drift map, the map as PNG, a
JSON summary, the per-chunk signals as Parquet, and MLflow metrics.

    python -m ray_jobs.monitor [--chunk-size N] [--consecutive K] [--jobs-address URL]
"""

from __future__ import annotations

import argparse
import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import ray

from pumpfleet import storage
from pumpfleet.alerts import AlertPolicy, ClassAlert, drift_wanted, hysteresis, new_data_due
from pumpfleet.drift import ANOMALY, HEALTH, AnalysisConfig, ClassAnalysis
from pumpfleet.entry import run_main
from pumpfleet.errors import PumpfleetError
from pumpfleet.predlog import read_log
from pumpfleet.registry import Registry
from pumpfleet.settings import Settings, get_settings
from pumpfleet.snapshot import open_snapshot
from pumpfleet.triggers import jobs_address, rows_since, start_retrains
from ray_jobs._ray import init_ray
from ray_jobs.monitor_args import add_monitor_args
from ray_jobs.monitor_reference import Reference, analysis_frame, class_reference
from ray_jobs.monitor_report import drift_map_png, report_html
from ray_jobs.triggers import job_server

log = logging.getLogger(__name__)

EXPERIMENT = "pumpfleet-monitor"
# Declared in monitor_args (shared with `pumpfleet monitor`) and named here too: the
# cluster manifests pass it, and cluster/validate.py checks their options in this module.
JOBS_ADDRESS_OPTION = "--jobs-address"


@ray.remote(num_cpus=1)
def _class_task(
    settings: Settings,
    snapshot: str,
    cls: str,
    rows: pd.DataFrame,
    feedback: pd.DataFrame,
    cfg: AnalysisConfig,
) -> tuple[ClassAnalysis, dict[str, Any]] | str:
    """One class's analysis and what its summary needs besides, or why it was skipped."""
    from pumpfleet.drift import analyse_class

    try:
        ref = class_reference(settings, snapshot, cls)
        analysis = analysis_frame(rows, feedback, ref)
        result = analyse_class(cls, ref.drift, analysis, ref.features, cfg, ref.perf, ref.health)
    except PumpfleetError as e:
        return str(e)
    meta = class_meta(cls, ref, rows, analysis)
    result.notes = ref.notes + result.notes
    return result, meta


def class_meta(
    cls: str, ref: Reference, rows: pd.DataFrame, analysis: pd.DataFrame
) -> dict[str, Any]:
    """The reference's part of a class's summary: champion, snapshot, what drives the
    champion's flags, and the health reference (None: no anomaly champion). Notes on
    health scores that cannot be compared go to ``ref.notes``."""
    meta: dict[str, Any] = {
        "champion": ref.champion,
        "reference_snapshot": ref.snapshot,
        "alert_drivers": ref.drivers,
        "health": None,
    }
    h = ref.health
    if h is None:
        if HEALTH in rows and rows[HEALTH].notna().any():
            ref.notes.append(
                f"{cls}: health scores logged, but no anomaly champion to compare with"
            )
        return meta
    flags = analysis[ANOMALY].dropna() if ANOMALY in analysis else pd.Series(dtype=float)
    other = int(rows[HEALTH].notna().sum()) - len(flags) if HEALTH in rows else 0
    if other:
        ref.notes.append(
            f"{cls}: {other} health scores from anomaly versions other than the champion "
            f"(v{h.version}) left out of its health signals"
        )
    meta["health"] = {
        "anomaly_champion": h.version,
        "reference_snapshot": ref.health_snapshot,
        "reference_windows": len(h.scores),
        "target_far": h.target_far,
        "reference_alarm_rate": h.reference_alarm_rate,
        "expected_alarm_rate": h.expected_alarm_rate,
        "scored_rows": len(flags),
        "alarm_rate": float(flags.mean()) if len(flags) else None,
    }
    return meta


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
    address: str | None = None,
    trigger: bool = True,
    now: datetime | None = None,
    server: Any = None,
    std_multiplier: float | None = None,
) -> dict[str, Any]:
    """Analyse every class with enough predictions; alerts need ``min_alert_chunks``
    drifted chunks in a row (``policy.consecutive`` when a policy is given); retrains
    go to the job server at ``address`` (or ``server``, a ``JobServer``) when ``trigger``."""
    policy = policy or AlertPolicy(consecutive=min_alert_chunks, clear_after=min_alert_chunks)
    now = now or datetime.now(UTC)
    cfg = AnalysisConfig(chunk_size=chunk_size)
    if std_multiplier is not None:
        cfg = AnalysisConfig(chunk_size=chunk_size, std_multiplier=std_multiplier)
    logged = read_log(str(settings.predictions_dir))
    feedback = read_log(f"{str(settings.predictions_dir).rstrip('/')}-feedback")
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
    }
    if logged.empty:
        msg = f"no predictions logged under {settings.predictions_dir}; nothing to monitor"
        log.warning(msg)
        return _write(settings, {**summary, "status": "empty", "snapshot_id": None}, {}, msg)
    usable, notes = _usable(logged)
    summary["notes"] += notes
    snap = open_snapshot(str(settings.features_dir), snapshot)
    summary["snapshot_id"] = snap.id
    tasks = {}
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
            tasks[cls] = _class_task.remote(settings, snap.id, cls, rows, fb, cfg)
    results: dict[str, ClassAnalysis] = {}
    outs = ray.get(list(tasks.values())) if tasks else []  # no tasks: Ray is not needed
    for cls, out in zip(tasks, outs, strict=True):
        if isinstance(out, str):
            summary["skipped"][cls] = out
            log.warning("%s: %s", cls, out)
            continue
        result, meta = out
        results[cls] = result
        summary["classes"][cls] = _class_summary(result, policy, meta)
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
        address = jobs_address(address)
        server = server or job_server(address, settings)
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
    return _write(settings, {**summary, "status": "ok"}, results, None)


def _rows_since(settings: Settings, snapshot: str) -> int:
    try:
        snap = open_snapshot(str(settings.features_dir), snapshot)
        return rows_since(snap, str(settings.data_dir))
    except (OSError, PumpfleetError) as e:
        log.warning("could not count the rows since snapshot %s: %s", snapshot, e)
        return 0


def _last(chunks: pd.DataFrame, kind: str) -> dict[str, float]:
    c = chunks[chunks["kind"] == kind].sort_values("chunk")
    return {str(s): float(g["value"].iloc[-1]) for s, g in c.groupby("signal")}


def _class_summary(r: ClassAnalysis, policy: AlertPolicy, meta: dict[str, Any]) -> dict[str, Any]:
    """One class's entry in the JSON summary: ``meta`` (from its task) and its signals."""
    return {**meta, **_drift_summary(r, policy), "health": _health_summary(r, policy, meta)}


def _health_summary(
    r: ClassAnalysis, policy: AlertPolicy, meta: dict[str, Any]
) -> dict[str, Any] | None:
    if meta.get("health") is None:
        return None
    flags = r.health_flags()
    alert = hysteresis(r.pump_class, flags, policy)
    h = r.chunks[r.chunks["kind"] == "health"]
    rate = h[(h["signal"] == "alarm_rate") & h["value"].notna()].sort_values("chunk")
    return {
        **meta["health"],
        "chunks": len(flags),
        "alarm_rate_chunks": int(rate["alert"].sum()),
        "score_drift_chunks": int(h.loc[h["signal"] == HEALTH, "alert"].sum()),
        "drifted": bool(alert.episodes),
        "alert_active": alert.active,
        "detected_at_chunk": alert.first_raised,
        "episodes": [vars(e) for e in alert.episodes],
        "last_alarm_rate": float(rate["value"].iloc[-1]) if len(rate) else None,
        "last_alarm_bound": float(rate["upper"].iloc[-1]) if len(rate) else None,
    }


def _drift_summary(r: ClassAnalysis, policy: AlertPolicy) -> dict[str, Any]:
    alert: ClassAlert = hysteresis(r.pump_class, r.drifted(), policy)
    uni = r.chunks[r.chunks["kind"] == "univariate"]
    features = sorted(
        str(f)
        for f, g in uni.groupby("signal")
        if hysteresis(str(f), list(g.sort_values("chunk")["alert"]), policy).episodes
    )
    est = r.chunks[r.chunks["kind"] == "estimated"]
    return {
        "drifted": bool(alert.episodes),
        "alert_active": alert.active,
        "drifted_features": features,
        "detected_at_chunk": alert.first_raised,
        "episodes": [vars(e) for e in alert.episodes],
        "chunks": len(r.drifted()),
        "drifted_chunks": int(sum(r.drifted())),
        "multivariate_alerts": int(r.chunks.loc[r.chunks["kind"] == "multivariate", "alert"].sum()),
        "estimated_alerts": int(est["alert"].sum()),
        "analysis_rows": r.analysis_rows,
        "reference_rows": r.reference_rows,
        "estimated": _last(r.chunks, "estimated"),
        "realised": _last(r.chunks, "realised"),
        "notes": r.notes,
    }


def _write(
    settings: Settings, summary: dict[str, Any], results: dict[str, ClassAnalysis], msg: str | None
) -> dict[str, Any]:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    reports = str(settings.reports_dir)
    summary["message"] = msg
    for n in (f"drift-{stamp}.json", "drift-latest.json"):
        storage.write_json(storage.join(reports, n), summary)
    if not results:
        return {**summary, "report": None, "drift_map": None}
    png = drift_map_png(results)
    report = storage.join(reports, f"drift-{stamp}.html")
    drift_map = storage.join(reports, f"drift-map-{stamp}.png")
    storage.write_bytes(report, report_html(summary, results, png).encode())
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ray_jobs.monitor", description=__doc__)
    add_monitor_args(parser)
    args = parser.parse_args(argv)

    def job() -> dict[str, Any]:
        settings = get_settings()
        init_ray(settings)
        return monitor_from_args(settings, args)

    return run_main(job)


def monitor_from_args(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    policy = AlertPolicy(
        consecutive=args.consecutive,
        clear_after=args.consecutive,
        cooldown_hours=args.cooldown_hours,
        new_data_rows=args.new_data_rows,
    )
    return run_monitor(
        settings,
        args.snapshot,
        args.chunk_size,
        policy=policy,
        address=args.jobs_address,
        trigger=not args.no_trigger,
        std_multiplier=args.std_multiplier,
    )


if __name__ == "__main__":
    raise SystemExit(main())
