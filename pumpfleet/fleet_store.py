"""The fleet database's writes: scored windows in (from cloud scoring and edge uploads),
the alerts they open, escalate and clear by :mod:`pumpfleet.fleet_alerts`'s rules, a
crew's acknowledgement, assignment and close, failures and maintenance marking the
alerts, and the webhook outbox those events land in, in the same transaction as the
change they tell of (so none is lost and none is told that did not happen).

    db = FleetDB(default_url(workspace))
    db.ingest([ScoredRow(...)])
    db.act(alert_id, "ack", by="maria")
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

import sqlalchemy as sa

from pumpfleet import fleet_alerts as rules
from pumpfleet import fleet_views as views
from pumpfleet.errors import InputError, NotFoundError
from pumpfleet.fleet_alerts import Action, AlertRules, AlertView, Streak
from pumpfleet.fleet_batch import Lookup, Prepared, PumpState, lookups, reading, statements
from pumpfleet.fleet_schema import (
    alert_events,
    alerts,
    devices,
    engine_for,
    failures,
    outbox,
    pumps,
    scores,
)

SYSTEM = "pumpfleet"  # who acts when the rules do
CHUNK = 500  # pump ids per IN (...) of a batch
WEBHOOK_EVENTS = {
    "opened": "alert.opened",
    "escalated": "alert.escalated",
    "closed": "alert.closed",
}


@dataclass(frozen=True, slots=True)
class ScoredRow:
    """One scored window of a pump, as the fleet state takes it: from a prediction-log
    row of the cloud or an edge device's uploaded record. ``at``: unix seconds of the
    reading (the answer, in the cloud); ``threshold`` and ``horizon_hours``: its class's
    (the model's FeatureSpec), None where unknown (the pump's last ones are kept);
    ``drivers``: ``[{"sensor", "weight"}]`` where the window was explained."""

    pump_id: str
    pump_class: str
    at: float
    rul_hours: float
    failure_probability: float
    model_version: str | None = None
    arm: str | None = None
    health_score: float | None = None
    anomaly: bool | None = None
    site: str | None = None
    device_id: str | None = None
    drivers: list[dict[str, Any]] | None = None
    threshold: float | None = None
    horizon_hours: float | None = None


class FleetDB:
    """The fleet database at ``url`` (migrated when opened), with the alert ``rules``, the
    webhook ``urls`` each event is queued for, the default horizon of a class whose
    model said none, and the clock."""

    def __init__(
        self,
        url: str,
        alert_rules: AlertRules | None = None,
        webhook_urls: Sequence[str] = (),
        default_horizon_hours: float = 72.0,
        default_threshold: float = 0.5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        self.engine = engine_for(url)
        self.rules = alert_rules or AlertRules()
        self.webhook_urls = list(webhook_urls)
        self.default_horizon = default_horizon_hours
        self.default_threshold = default_threshold
        self.clock = clock
        self._prepared: dict[str, Prepared] | None = None  # the engine's one dialect
        self._lookup: tuple[Lookup, Lookup] | None = None

    def close(self) -> None:
        self.engine.dispose()

    # --- scored windows in -----------------------------------------------------------

    def ingest(self, rows: Iterable[ScoredRow]) -> list[tuple[str, int]]:
        """Scored windows into the state and the score history (oldest first); returns
        the alert events they caused, ``(event, alert_id)``. A window older than the
        pump's latest is history only. One transaction; the batch's pumps and their live
        alerts are read (and locked, on PostgreSQL) once, and written back at the end:
        each pump only what its windows changed (:mod:`pumpfleet.fleet_batch`)."""
        ordered = sorted(rows, key=lambda r: r.at)
        events: list[tuple[str, int]] = []
        if not ordered:
            return events
        now = self.clock()
        with self.engine.begin() as conn:
            put = self._statements(conn)
            put["scores"].run(conn, [[r.pump_id, *reading(r)] for r in self.history(ordered)])
            ids = sorted({r.pump_id for r in ordered})  # one lock order: no deadlocks
            state: dict[str, PumpState] = {}
            live: dict[tuple[str, float], dict[str, Any]] = {}
            known, alerting = self._lookups(conn)
            for k in range(0, len(ids), CHUNK):
                chunk = ids[k : k + CHUNK]
                for x in known.rows(conn, chunk):
                    s = PumpState(
                        x[1], x[2], x[3], x[4], x[5], x[6], x[7], x[8], no_drivers=bool(x[9])
                    )
                    s.was = s.sticky()
                    state[x[0]] = s
                for x in alerting.rows(conn, chunk):
                    live[(x[1], x[2])] = {
                        "id": x[0],
                        "status": x[3],
                        "escalated": bool(x[4]),
                        "risk": x[5],
                    }
            touched: set[int] = set()
            for r in ordered:
                events.extend(self._one(conn, r, now, state, live, touched))
            fresh, hot, sticky, drivers = [], [], [], []
            for pid, s in state.items():
                if s.newest is None:  # history only: as it was
                    continue
                r = s.newest
                changed = [*reading(r), s.above, s.below, now]  # HOT's columns
                if s.was is None:
                    fresh.append(
                        [pid, *s.sticky(), *changed, [] if s.drivers is None else s.drivers]
                    )
                    continue
                hot.append([*changed, pid])
                if s.sticky() != s.was:
                    sticky.append([*s.sticky(), pid])
                if s.drivers is not None or s.no_drivers:
                    drivers.append([[] if s.drivers is None else s.drivers, pid])
            put["new pump"].run(conn, fresh)
            put["hot"].run(conn, hot)
            put["sticky"].run(conn, sticky)
            put["drivers"].run(conn, drivers)
            risks = [[x["risk"], now, x["id"]] for x in live.values() if x["id"] in touched]
            put["risk"].run(conn, risks)
        return events

    @staticmethod
    def history(ordered: list[ScoredRow]) -> list[ScoredRow]:
        """The score history's rows (``ordered``: oldest first) in the order they are
        inserted: one pump's after another, each pump's oldest first. The history's index
        on (pump, time) then takes a drain's rows leaf page by leaf page; in time order,
        a drain of many batches went back to each pump's page once a batch
        (``python -m benchmarks.fleet_feed`` times both on a long history)."""
        return sorted(ordered, key=attrgetter("pump_id"))  # stable: a pump's stay oldest first

    def _statements(self, conn: sa.Connection) -> dict[str, Prepared]:
        if self._prepared is None:
            self._prepared = statements(conn.dialect)
        return self._prepared

    def _lookups(self, conn: sa.Connection) -> tuple[Lookup, Lookup]:
        if self._lookup is None:
            self._lookup = lookups(conn.dialect)
        return self._lookup

    def _one(
        self,
        conn: sa.Connection,
        r: ScoredRow,
        now: float,
        state: dict[str, PumpState],
        lives: dict[tuple[str, float], dict[str, Any]],
        touched: set[int],
    ) -> list[tuple[str, int]]:
        s = state.get(r.pump_id)
        if s is not None and s.last_at is not None and r.at < s.last_at:
            return []
        if s is None:
            s = state[r.pump_id] = PumpState(r.pump_class, None, None, None, None, None, 0, 0)
        threshold = r.threshold or s.threshold or self.default_threshold
        horizon = r.horizon_hours or s.horizon or self.default_horizon
        live = lives.get((r.pump_id, horizon))
        streak, action = rules.step(
            Streak(s.above, s.below),
            r.failure_probability,
            threshold,
            self.rules,
            live is not None,
            bool(live is not None and live["escalated"]),
        )
        s.pump_class, s.site = r.pump_class, r.site or s.site
        s.device_id, s.last_at = r.device_id or s.device_id, r.at
        s.threshold, s.horizon, s.above, s.below = threshold, horizon, streak.above, streak.below
        s.newest = r
        if r.drivers is not None:
            s.drivers = r.drivers
        if live is not None:
            live["risk"] = r.failure_probability
            touched.add(live["id"])
        return self._alert(conn, r, now, action, streak, threshold, horizon, s.site, lives)

    def _alert(
        self,
        conn: sa.Connection,
        r: ScoredRow,
        now: float,
        action: Action | None,
        streak: Streak,
        threshold: float,
        horizon: float,
        site: str | None,
        lives: dict[tuple[str, float], dict[str, Any]],
    ) -> list[tuple[str, int]]:
        """What the rules' ``action`` on window ``r`` does to the pump's alert (opens,
        escalates, clears or expires it, with its event); the events it caused."""
        live = lives.get((r.pump_id, horizon))
        if action is Action.OPEN:
            values = {
                "pump_id": r.pump_id,
                "pump_class": r.pump_class,
                "site": site,
                "horizon_hours": horizon,
                "status": rules.OPEN,
                "opened_at": r.at,
                "risk": r.failure_probability,
                "escalated": False,
                "updated_at": now,
            }
            new = conn.execute(alerts.insert().values(**values))
            alert_id = int(new.inserted_primary_key[0])  # type: ignore[index]
            lives[(r.pump_id, horizon)] = {"id": alert_id, **values}
            note = f"risk {r.failure_probability:.3f} >= {threshold:g} for {streak.above} windows"
            self._event(conn, alert_id, "opened", now, SYSTEM, note)
            return [("opened", alert_id)]
        if live is None or action is None:
            return []
        if action is Action.ESCALATE:
            live["escalated"] = True
            conn.execute(alerts.update().where(alerts.c.id == live["id"]).values(escalated=True))
            note = f"risk {r.failure_probability:.3f} >= {max(self.rules.escalate_at, threshold):g}"
            self._event(conn, live["id"], "escalated", now, SYSTEM, note)
            return [("escalated", live["id"])]
        note = f"risk below {threshold * self.rules.lower_band:g} for {streak.below} windows"
        if live["status"] == rules.OPEN:  # nobody took it: it expires
            conn.execute(alerts.update().where(alerts.c.id == live["id"]).values(risk=live["risk"]))
            self._close(conn, live["id"], now, SYSTEM, f"expired: {note}", "expired")
            del lives[(r.pump_id, horizon)]
            return [("closed", live["id"])]
        last = conn.execute(
            sa.select(alert_events.c.event)
            .where(alert_events.c.alert_id == live["id"])
            .order_by(alert_events.c.id.desc())
            .limit(1)
        ).scalar_one()
        if last != "cleared":  # taken by a crew: it stays theirs to close
            self._event(conn, live["id"], "cleared", now, SYSTEM, note)
        return []

    def device_seen(
        self, device_id: str, site: str | None, pump_class: str | None, at: float | None = None
    ) -> None:
        """An edge device's upload (for devices online)."""
        values = {"site": site, "pump_class": pump_class, "last_upload_at": at or self.clock()}
        with self.engine.begin() as conn:
            done = conn.execute(
                devices.update().where(devices.c.device_id == device_id).values(**values)
            )
            if done.rowcount == 0:
                conn.execute(devices.insert().values(device_id=device_id, **values))

    # --- a crew's actions ------------------------------------------------------------

    def act(
        self,
        alert_id: int,
        action: str,
        by: str,
        assignee: str | None = None,
        note: str | None = None,
        outcome: str | None = None,
    ) -> dict[str, Any]:
        """Acknowledge, assign or close an alert (NotFoundError: no such alert;
        ConflictError: its status does not allow it); returns the alert."""
        if outcome is not None and outcome not in (rules.HIT, rules.FALSE_ALARM):
            raise InputError(f"outcome: hit or false_alarm, not {outcome!r}")
        now = self.clock()
        with self.engine.begin() as conn:
            row = conn.execute(
                sa.select(alerts).where(alerts.c.id == alert_id).with_for_update()
            ).first()
            if row is None:
                raise NotFoundError(f"alert {alert_id}: no such alert")
            status = rules.transition(row.status, action, alert_id)
            if action == "close":
                self._close(conn, alert_id, now, by, note, "closed", outcome)
            else:
                values: dict[str, Any] = {"status": status, "updated_at": now}
                if action == "assign":
                    values["assignee"] = assignee
                    note = note or f"to {assignee}"
                conn.execute(alerts.update().where(alerts.c.id == alert_id).values(**values))
                self._event(conn, alert_id, status, now, by, note)
            return views.alert_of(conn, alert_id)

    # --- failures and maintenance ----------------------------------------------------

    def feedback(self, pump_id: str, at: float, failure: bool) -> dict[str, Any]:
        """A failure (``failure``) or a maintenance of a pump at ``at``: the alerts opened
        within their horizon before it become hits with their lead time, a failure with
        none is recorded as a miss, the pump's alerts still live are closed by it, and
        its streaks start afresh."""
        now = self.clock()
        kind = "failure" if failure else "maintenance"
        with self.engine.begin() as conn:
            # the pump's row first, then its alerts: the order ingest locks them in
            conn.execute(
                sa.select(pumps.c.pump_id).where(pumps.c.pump_id == pump_id).with_for_update()
            )
            q = sa.select(alerts).where(alerts.c.pump_id == pump_id).with_for_update()
            rows = list(conn.execute(q))
            views_ = [
                AlertView(a.id, a.opened_at, a.horizon_hours, a.status, a.outcome) for a in rows
            ]
            hits, missed = rules.mark_event(views_, at, failure)
            for m in hits:
                conn.execute(
                    alerts.update()
                    .where(alerts.c.id == m.alert_id)
                    .values(outcome=m.outcome, lead_time_hours=m.lead_time_hours, updated_at=now)
                )
            for a in rows:
                if a.status != rules.CLOSED and a.opened_at < at:
                    self._close(conn, a.id, now, SYSTEM, f"{kind} at {views.iso(at)}", kind)
            conn.execute(
                failures.insert().values(
                    pump_id=pump_id, kind=kind, at=at, missed=missed, received_at=now
                )
            )
            conn.execute(pumps.update().where(pumps.c.pump_id == pump_id).values(above=0, below=0))
        return {"hits": [m.alert_id for m in hits], "missed": missed}

    def settle(self, now: float | None = None) -> int:
        """Mark closed alerts whose horizon passed with no failure as false alarms."""
        at = self.clock() if now is None else now
        with self.engine.begin() as conn:
            q = sa.select(alerts).where(alerts.c.status == rules.CLOSED, alerts.c.outcome.is_(None))
            rows = [
                AlertView(a.id, a.opened_at, a.horizon_hours, a.status, a.outcome)
                for a in conn.execute(q)
            ]
            marked = rules.settle(rows, at)
            for m in marked:
                conn.execute(
                    alerts.update().where(alerts.c.id == m.alert_id).values(outcome=m.outcome)
                )
        return len(marked)

    def prune(self, scores_before: float, delivered_before: float) -> tuple[int, int]:
        """Drop score history older than ``scores_before`` and webhook events delivered
        before ``delivered_before``; the counts dropped (alerts and their history stay)."""
        with self.engine.begin() as conn:
            s = conn.execute(scores.delete().where(scores.c.at < scores_before)).rowcount
            o = conn.execute(
                outbox.delete().where(
                    outbox.c.delivered_at.is_not(None), outbox.c.delivered_at < delivered_before
                )
            ).rowcount
        return int(s), int(o)

    # --- history and the outbox ------------------------------------------------------

    def _close(
        self,
        conn: sa.Connection,
        alert_id: int,
        now: float,
        by: str,
        note: str | None,
        event: str,
        outcome: str | None = None,
    ) -> None:
        values: dict[str, Any] = {"status": rules.CLOSED, "closed_at": now, "updated_at": now}
        if outcome is not None:
            values["outcome"] = outcome
        conn.execute(alerts.update().where(alerts.c.id == alert_id).values(**values))
        self._event(conn, alert_id, event, now, by, note, webhook="closed")

    def _event(
        self,
        conn: sa.Connection,
        alert_id: int,
        event: str,
        now: float,
        by: str | None,
        note: str | None,
        webhook: str | None = None,
    ) -> None:
        conn.execute(
            alert_events.insert().values(alert_id=alert_id, at=now, event=event, by=by, note=note)
        )
        kind = WEBHOOK_EVENTS.get(webhook or event)
        if kind is None or not self.webhook_urls:
            return
        event_id = uuid.uuid4().hex
        body = json.dumps(
            {
                "id": event_id,
                "event": kind,
                "at": views.iso(now),
                "alert": views.alert_of(conn, alert_id),
            },
            sort_keys=True,
        )
        conn.execute(
            outbox.insert(),
            [
                {
                    "event_id": event_id,
                    "event": kind,
                    "alert_id": alert_id,
                    "url": url,
                    "body": body,
                    "created_at": now,
                    "attempts": 0,
                    "next_attempt_at": now,
                }
                for url in self.webhook_urls
            ],
        )
