"""What the fleet database answers: the ranked work list and its filters, a pump's
history, the alerts with their history, the counts the service's gauges show, and the
alert figures (precision, median lead time). Read-only; the writes are in
:mod:`pumpfleet.fleet_store`.

Shapes are the API's (``GET /v1/fleet``, ``/v1/fleet/{pump_id}``, ``/v1/alerts``): times
as ISO-8601 UTC strings, the pump's open alert in brief, each alert with its history.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from pumpfleet import fleet_alerts as rules
from pumpfleet.errors import NotFoundError
from pumpfleet.fleet_schema import alert_events, alerts, devices, failures, pumps, scores

LIVE = alerts.c.status != rules.CLOSED


def iso(t: float | None) -> str | None:
    """Unix seconds as ISO-8601 UTC (``2026-12-06T11:05:24.000Z``); None stays None."""
    if t is None:
        return None
    text = datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def _drivers(value: Any) -> list[dict[str, Any]]:
    return [{"sensor": str(d["sensor"]), "weight": float(d["weight"])} for d in value or []]


def pump_dict(row: Any, open_alert: Any, stale_after: float, now: float) -> dict[str, Any]:
    """A pump's latest state as the API shows it."""
    last = row.last_reading_at
    return {
        "pump_id": row.pump_id,
        "pump_class": row.pump_class,
        "site": row.site,
        "device_id": row.device_id,
        "last_reading_at": iso(last),
        "rul_hours": row.rul_hours,
        "failure_probability": row.failure_probability,
        "model_version": row.model_version,
        "arm": row.arm,
        "health_score": row.health_score,
        "anomaly": row.anomaly,
        "drivers": _drivers(row.drivers),
        "stale": last is None or now - last > stale_after,
        "open_alert": None
        if open_alert is None
        else {
            "id": open_alert.id,
            "status": open_alert.status,
            "opened_at": iso(open_alert.opened_at),
            "assignee": open_alert.assignee,
        },
    }


def alert_dicts(conn: sa.Connection, rows: list[Any]) -> list[dict[str, Any]]:
    """Alerts as the API shows them, each with its history (oldest first)."""
    ids = [r.id for r in rows]
    history: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
    if ids:
        q = sa.select(alert_events).where(alert_events.c.alert_id.in_(ids))
        for e in conn.execute(q.order_by(alert_events.c.id)):
            history[e.alert_id].append(
                {"at": iso(e.at), "event": e.event, "by": e.by, "note": e.note}
            )
    return [
        {
            "id": r.id,
            "pump_id": r.pump_id,
            "pump_class": r.pump_class,
            "site": r.site,
            "horizon_hours": r.horizon_hours,
            "status": r.status,
            "opened_at": iso(r.opened_at),
            "risk": r.risk,
            "assignee": r.assignee,
            "outcome": r.outcome,
            "lead_time_hours": r.lead_time_hours,
            "history": history[r.id],
        }
        for r in rows
    ]


def alert_of(conn: sa.Connection, alert_id: int) -> dict[str, Any]:
    row = conn.execute(sa.select(alerts).where(alerts.c.id == alert_id)).first()
    if row is None:
        raise NotFoundError(f"alert {alert_id}: no such alert")
    return alert_dicts(conn, [row])[0]


def _risk_order() -> list[Any]:
    # riskiest first, then the shortest RUL; pumps never scored last (NULLs last on both)
    p = pumps.c
    return [
        sa.case((p.failure_probability.is_(None), 1), else_=0),
        p.failure_probability.desc(),
        sa.case((p.rul_hours.is_(None), 1), else_=0),
        p.rul_hours.asc(),
        p.pump_id,
    ]


def _live_alerts(conn: sa.Connection, pump_ids: list[str]) -> dict[str, Any]:
    if not pump_ids:
        return {}
    q = sa.select(alerts).where(LIVE, alerts.c.pump_id.in_(pump_ids)).order_by(alerts.c.id)
    return {r.pump_id: r for r in conn.execute(q)}


def fleet(
    engine: sa.Engine,
    now: float,
    stale_after: float,
    site: str | None = None,
    pump_class: str | None = None,
    min_risk: float | None = None,
    stale: bool | None = None,
    limit: int = 100,
    offset: int = 0,
) -> dict[str, Any]:
    """``GET /v1/fleet``: the pumps ranked by risk, filtered, one page of them."""
    p = pumps.c
    where = []
    if site is not None:
        where.append(p.site == site)
    if pump_class is not None:
        where.append(p.pump_class == pump_class)
    if min_risk is not None:
        where.append(p.failure_probability >= min_risk)
    if stale is not None:
        fresh = p.last_reading_at >= now - stale_after
        where.append(sa.or_(p.last_reading_at.is_(None), ~fresh) if stale else fresh)
    with engine.connect() as conn:
        total = conn.execute(sa.select(sa.func.count()).select_from(pumps).where(*where))
        q = sa.select(pumps).where(*where).order_by(*_risk_order()).limit(limit).offset(offset)
        rows = list(conn.execute(q))
        live = _live_alerts(conn, [r.pump_id for r in rows])
        return {
            "total": int(total.scalar_one()),
            "pumps": [pump_dict(r, live.get(r.pump_id), stale_after, now) for r in rows],
        }


def pump(
    engine: sa.Engine, pump_id: str, now: float, stale_after: float, limit: int = 200
) -> dict[str, Any]:
    """``GET /v1/fleet/{pump_id}``: its state, its latest ``limit`` scores (oldest first)
    and its alerts (newest first)."""
    with engine.connect() as conn:
        row = conn.execute(sa.select(pumps).where(pumps.c.pump_id == pump_id)).first()
        if row is None:
            raise NotFoundError(f"pump_id: no pump {pump_id!r} in the fleet state")
        q = (
            sa.select(scores)
            .where(scores.c.pump_id == pump_id)
            .order_by(scores.c.at.desc(), scores.c.id.desc())
            .limit(limit)
        )
        history = list(conn.execute(q))[::-1]
        theirs = sa.select(alerts).where(alerts.c.pump_id == pump_id)
        alert_rows = list(conn.execute(theirs.order_by(alerts.c.id.desc()).limit(100)))
        live = next((a for a in alert_rows if a.status != rules.CLOSED), None)
        return {
            "pump": pump_dict(row, live, stale_after, now),
            "scores": [
                {
                    "at": iso(s.at),
                    "rul_hours": s.rul_hours,
                    "failure_probability": s.failure_probability,
                    "model_version": s.model_version,
                    "arm": s.arm,
                    "health_score": s.health_score,
                    "anomaly": s.anomaly,
                }
                for s in history
            ],
            "alerts": alert_dicts(conn, alert_rows),
        }


def alert_list(
    engine: sa.Engine,
    status: str | None = None,
    pump_class: str | None = None,
    site: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> dict[str, Any]:
    """``GET /v1/alerts``: newest first, filtered, one page."""
    a = alerts.c
    where = []
    if status is not None:
        where.append(a.status == status)
    if pump_class is not None:
        where.append(a.pump_class == pump_class)
    if site is not None:
        where.append(a.site == site)
    with engine.connect() as conn:
        total = conn.execute(sa.select(sa.func.count()).select_from(alerts).where(*where))
        q = sa.select(alerts).where(*where).order_by(a.id.desc()).limit(limit).offset(offset)
        rows = list(conn.execute(q))
        return {"total": int(total.scalar_one()), "alerts": alert_dicts(conn, rows)}


def open_alerts_by(engine: sa.Engine) -> dict[tuple[str, str], int]:
    """Alerts not closed, by (class, site); a pump with no site counts under ``""``."""
    q = sa.select(alerts.c.pump_class, alerts.c.site, sa.func.count()).where(LIVE)
    with engine.connect() as conn:
        rows = conn.execute(q.group_by(alerts.c.pump_class, alerts.c.site))
        return {(c, s or ""): int(n) for c, s, n in rows}


def stale_pumps(engine: sa.Engine, now: float, stale_after: float) -> int:
    """Pumps with no reading for longer than ``stale_after`` seconds."""
    last = pumps.c.last_reading_at
    q = sa.select(sa.func.count()).where(sa.or_(last.is_(None), last < now - stale_after))
    with engine.connect() as conn:
        return int(conn.execute(q.select_from(pumps)).scalar_one())


def devices_online(engine: sa.Engine, now: float, stale_after: float) -> int:
    """Edge devices that uploaded within ``stale_after`` seconds."""
    q = sa.select(sa.func.count()).where(devices.c.last_upload_at >= now - stale_after)
    with engine.connect() as conn:
        return int(conn.execute(q.select_from(devices)).scalar_one())


def alert_figures(engine: sa.Engine) -> rules.Figures:
    """Precision of the alerts and their median lead time, and the missed failures (call
    :meth:`pumpfleet.fleet_store.FleetDB.settle` first to count expired false alarms)."""
    with engine.connect() as conn:
        rows = list(conn.execute(sa.select(alerts.c.outcome, alerts.c.lead_time_hours)))
        missed = sa.select(sa.func.count()).select_from(failures).where(failures.c.missed)
        misses = int(conn.execute(missed).scalar_one())
    outcomes = [r.outcome for r in rows if r.outcome]
    leads = [r.lead_time_hours for r in rows if r.outcome == rules.HIT and r.lead_time_hours]
    return rules.figures(outcomes, leads, misses)


def work_list(db: Any, n: int = 5, now: float | None = None) -> list[dict[str, Any]]:
    """The ``n`` riskiest pumps of ``db`` (a FleetDB or an Engine), with their drivers
    and open alert, as ``GET /v1/fleet`` lists them (``make demo`` prints them)."""
    import time

    engine = getattr(db, "engine", db)
    at = time.time() if now is None else now
    return fleet(engine, at, float("inf"), limit=n)["pumps"]
