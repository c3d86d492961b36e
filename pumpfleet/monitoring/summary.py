"""One class's entry in the monitor's JSON summary: what its reference says (champion,
snapshot, what drives its flags, the health reference) and its drift and health signals
with the alert hysteresis applied."""

from __future__ import annotations

from typing import Any

import pandas as pd

from pumpfleet.alerts import AlertPolicy, ClassAlert, hysteresis
from pumpfleet.drift import ANOMALY, HEALTH, ClassAnalysis
from pumpfleet.monitoring.reference import Reference


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


def _last(chunks: pd.DataFrame, kind: str) -> dict[str, float]:
    c = chunks[chunks["kind"] == kind].sort_values("chunk")
    return {str(s): float(g["value"].iloc[-1]) for s, g in c.groupby("signal")}


def class_summary(r: ClassAnalysis, policy: AlertPolicy, meta: dict[str, Any]) -> dict[str, Any]:
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
