"""``FleetDB.ingest`` as it was before it wrote a batch through prepared statements
(pumpfleet/fleet_batch.py), kept as the reference the new one must equal (the same
pumps, score history, alerts, alert history and webhook outbox), verbatim but for one
fix, named where it is."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from pumpfleet import fleet_alerts as rules
from pumpfleet import fleet_views as views
from pumpfleet.fleet_alerts import Streak
from pumpfleet.fleet_schema import alerts, pumps, scores
from pumpfleet.fleet_store import CHUNK, FleetDB, ScoredRow


class FleetDBBefore(FleetDB):
    """The fleet database with the old ingest."""

    def ingest(self, rows: Iterable[ScoredRow]) -> list[tuple[str, int]]:
        """Scored windows into the state and the score history (oldest first); returns
        the alert events they caused, ``(event, alert_id)``. A window older than the
        pump's latest is history only. One transaction; the batch's pumps and their live
        alerts are read (and locked, on PostgreSQL) once, and written back at the end."""
        ordered = sorted(rows, key=lambda r: r.at)
        events: list[tuple[str, int]] = []
        if not ordered:
            return events
        now = self.clock()
        with self.engine.begin() as conn:
            conn.execute(
                scores.insert(),
                [
                    {
                        "pump_id": r.pump_id,
                        "at": r.at,
                        "rul_hours": r.rul_hours,
                        "failure_probability": r.failure_probability,
                        "model_version": r.model_version,
                        "arm": r.arm,
                        "health_score": r.health_score,
                        "anomaly": r.anomaly,
                    }
                    for r in ordered
                ],
            )
            ids = sorted({r.pump_id for r in ordered})  # one lock order: no deadlocks
            old: dict[str, dict[str, Any]] = {}
            live: dict[tuple[str, float], dict[str, Any]] = {}
            for k in range(0, len(ids), CHUNK):
                chunk = ids[k : k + CHUNK]
                q = sa.select(pumps).where(pumps.c.pump_id.in_(chunk)).order_by(pumps.c.pump_id)
                old |= {p.pump_id: dict(p._mapping) for p in conn.execute(q.with_for_update())}
                q = sa.select(alerts).where(views.LIVE, alerts.c.pump_id.in_(chunk))
                live |= {
                    (a.pump_id, a.horizon_hours): dict(a._mapping)
                    for a in conn.execute(q.order_by(alerts.c.id).with_for_update())
                }
            known = set(old)
            touched: set[int] = set()
            for r in ordered:
                events.extend(self._one_before(conn, r, now, old, live, touched))
            fresh = [{"pump_id": i, **old[i]} for i in old if i not in known]
            if fresh:
                conn.execute(pumps.insert(), fresh)
            # the one change: a pump whose windows were all older than its latest kept
            # its row as read, pump_id too, and as the first of the batch that made the
            # update set pump_id and fail for every other pump (they lack it)
            kept = [{"b_id": i, **old[i]} | {"pump_id": i} for i in old if i in known]
            if kept:
                cols: dict[str, Any] = {
                    c: sa.bindparam(c) for c in kept[0] if c not in ("b_id", "pump_id")
                }
                conn.execute(
                    pumps.update().where(pumps.c.pump_id == sa.bindparam("b_id")).values(cols),
                    kept,
                )
            risks = [
                {"b_id": a["id"], "risk": a["risk"], "updated_at": now}
                for a in live.values()
                if a["id"] in touched
            ]
            if risks:
                conn.execute(
                    alerts.update()
                    .where(alerts.c.id == sa.bindparam("b_id"))
                    .values(risk=sa.bindparam("risk"), updated_at=sa.bindparam("updated_at")),
                    risks,
                )
        return events

    def _one_before(
        self,
        conn: sa.Connection,
        r: ScoredRow,
        now: float,
        old_: dict[str, dict[str, Any]],
        lives: dict[tuple[str, float], dict[str, Any]],
        touched: set[int],
    ) -> list[tuple[str, int]]:
        old = old_.get(r.pump_id)
        last_at = None if old is None else old["last_reading_at"]
        if last_at is not None and r.at < last_at:
            return []
        get = (lambda k: old[k]) if old is not None else (lambda k: None)
        threshold = r.threshold or get("threshold") or self.default_threshold
        horizon = r.horizon_hours or get("horizon_hours") or self.default_horizon
        live = lives.get((r.pump_id, horizon))
        streak = Streak(old["above"], old["below"]) if old is not None else Streak()
        streak, action = rules.step(
            streak,
            r.failure_probability,
            threshold,
            self.rules,
            live is not None,
            bool(live is not None and live["escalated"]),
        )
        site = r.site or get("site")
        old_[r.pump_id] = {
            "pump_class": r.pump_class,
            "site": site,
            "device_id": r.device_id or get("device_id"),
            "last_reading_at": r.at,
            "rul_hours": r.rul_hours,
            "failure_probability": r.failure_probability,
            "model_version": r.model_version,
            "arm": r.arm,
            "health_score": r.health_score,
            "anomaly": r.anomaly,
            "drivers": r.drivers if r.drivers is not None else (get("drivers") or []),
            "threshold": threshold,
            "horizon_hours": horizon,
            "above": streak.above,
            "below": streak.below,
            "updated_at": now,
        }
        if live is not None:
            live["risk"] = r.failure_probability
            touched.add(live["id"])
        # what the action does to the alert: unchanged, the same code as the new ingest's
        return self._alert(conn, r, now, action, streak, threshold, horizon, site, lives)
