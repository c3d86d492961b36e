"""The fleet database (pumpfleet/fleet_store.py, fleet_views.py) on SQLite and on a real
PostgreSQL server: state, score history, the alert life cycle with its history, the
webhook outbox, and hit / miss / false-alarm marking with lead times on a simulated
fleet whose failures are known."""

from __future__ import annotations

import statistics

import numpy as np
import pytest
import sqlalchemy as sa

from pumpfleet import fleet_views as views
from pumpfleet.errors import ConflictError, NotFoundError
from pumpfleet.fleet_alerts import AlertRules
from pumpfleet.fleet_batch import lookups
from pumpfleet.fleet_schema import VERSION_TABLE, outbox
from pumpfleet.fleet_store import FleetDB, ScoredRow
from pumpfleet.simulator import SimulationConfig, simulate_fleet
from tests.postgres_server import fleet_url, pg_server  # noqa: F401 (fixtures)

H = 3600.0


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def row(pump: str, hour: float, risk: float, **kw: object) -> ScoredRow:
    fields: dict[str, object] = {
        "pump_class": "centrifugal",
        "rul_hours": 100 * (1 - risk),
        "model_version": "3",
        "arm": "champion",
        "site": "site-01",
        "threshold": 0.5,
        "horizon_hours": 48.0,
    } | kw
    return ScoredRow(pump, at=hour * H, failure_probability=risk, **fields)  # type: ignore[arg-type]


def test_migrations_create_the_schema_under_its_own_version_table(fleet_url: str) -> None:  # noqa: F811
    db = FleetDB(fleet_url)
    names = set(sa.inspect(db.engine).get_table_names())
    assert {
        "fleet_pumps",
        "fleet_scores",
        "fleet_alerts",
        "fleet_alert_events",
        "fleet_failures",
        "fleet_devices",
        "fleet_outbox",
        VERSION_TABLE,
    } <= names
    assert "alembic_version" not in names  # MLflow's, in a shared database
    db.close()


def test_state_work_list_filters_and_staleness(fleet_url: str) -> None:  # noqa: F811
    clock = Clock(10 * H)
    db = FleetDB(fleet_url, clock=clock)
    drivers = [{"sensor": "vibration", "weight": 0.31}, {"sensor": "bearing_temp", "weight": 0.1}]
    db.ingest(
        [
            row("p1", 9, 0.2),
            row("p2", 9, 0.8, drivers=drivers),
            row("p3", 2, 0.8, rul_hours=5.0),
            row("p4", 9, 0.4, site="site-02", pump_class="screw"),
            row("p1", 1, 0.99),  # older: history
        ]
    )
    out = views.fleet(db.engine, clock(), stale_after=4 * H)
    assert out["total"] == 4
    ranked = [(p["pump_id"], p["failure_probability"], p["stale"]) for p in out["pumps"]]
    # risk first, then the shortest RUL (p3: 5 h before p2's 20 h); p3 read 8 h ago: stale
    assert ranked == [("p3", 0.8, True), ("p2", 0.8, False), ("p4", 0.4, False), ("p1", 0.2, False)]
    assert out["pumps"][1]["drivers"] == drivers
    assert out["pumps"][1]["last_reading_at"] == "1970-01-01T09:00:00.000Z"
    assert views.fleet(db.engine, clock(), 4 * H, site="site-02")["total"] == 1
    assert views.fleet(db.engine, clock(), 4 * H, pump_class="screw")["pumps"][0]["pump_id"] == "p4"
    risky = views.fleet(db.engine, clock(), 4 * H, min_risk=0.5)["pumps"]
    assert [p["pump_id"] for p in risky] == ["p3", "p2"]
    stale = views.fleet(db.engine, clock(), 4 * H, stale=True)["pumps"]
    assert [p["pump_id"] for p in stale] == ["p3"]
    page = views.fleet(db.engine, clock(), 4 * H, limit=2, offset=1)
    assert (page["total"], [p["pump_id"] for p in page["pumps"]]) == (4, ["p2", "p4"])
    assert views.stale_pumps(db.engine, clock(), 4 * H) == 1
    history = views.pump(db.engine, "p1", clock(), 4 * H)["scores"]
    assert [(s["at"][11:13], s["failure_probability"]) for s in history] == [
        ("01", 0.99),
        ("09", 0.2),
    ]
    assert [w["pump_id"] for w in views.work_list(db, 2, clock())] == ["p3", "p2"]
    with pytest.raises(NotFoundError, match="pump_id"):
        views.pump(db.engine, "nope", clock(), 4 * H)
    db.device_seen("rig-1", "site-01", "centrifugal", at=clock() - 60)
    db.device_seen("rig-2", "site-01", "centrifugal", at=clock() - 2 * H)
    assert views.devices_online(db.engine, clock(), 900) == 1
    db.close()


def test_the_alert_life_cycle_with_history_and_its_webhook_events(fleet_url: str) -> None:  # noqa: F811
    clock = Clock(100 * H)
    db = FleetDB(fleet_url, AlertRules(open_after=2), ["http://127.0.0.1:1/hook"], clock=clock)
    assert db.ingest([row("p1", 1, 0.7)]) == []  # one window: nothing yet
    assert db.ingest([row("p1", 2, 0.6)]) == [("opened", 1)]
    assert db.ingest([row("p1", 3, 0.95), row("p1", 4, 0.97)]) == [("escalated", 1)]
    assert db.ingest([row("p1", 5, 0.8), row("p1", 6, 0.9)]) == []  # de-duplicated
    assert views.open_alerts_by(db.engine) == {("centrifugal", "site-01"): 1}
    acked = db.act(1, "ack", "maria")
    assert (acked["status"], acked["risk"]) == ("acknowledged", 0.9)
    with pytest.raises(ConflictError, match="acknowledged: it cannot be acknowledged"):
        db.act(1, "ack", "maria")
    assert db.act(1, "assign", "maria", assignee="crew-3")["assignee"] == "crew-3"
    db.ingest([row("p1", h, 0.1) for h in (7, 8, 9, 10)])  # cleared, but taken: stays
    closed = db.act(1, "close", "crew-3", note="bearing replaced", outcome="hit")
    assert (closed["status"], closed["outcome"]) == ("closed", "hit")
    assert [(e["event"], e["by"]) for e in closed["history"]] == [
        ("opened", "pumpfleet"),
        ("escalated", "pumpfleet"),
        ("acknowledged", "maria"),
        ("assigned", "maria"),
        ("cleared", "pumpfleet"),
        ("closed", "crew-3"),
    ]
    assert closed["history"][-1]["note"] == "bearing replaced"
    with pytest.raises(ConflictError, match="alert 1 is closed"):
        db.act(1, "close", "crew-3", note="again")
    with pytest.raises(NotFoundError, match="alert 99"):
        db.act(99, "ack", "maria")
    assert views.open_alerts_by(db.engine) == {}
    # a new rise opens a new alert; nobody takes it and it expires when the risk clears
    assert db.ingest([row("p1", 11, 0.6), row("p1", 12, 0.6)]) == [("opened", 2)]
    assert db.ingest([row("p1", h, 0.1) for h in (13, 14, 15)]) == [("closed", 2)]
    listed = views.alert_list(db.engine, status="closed")
    assert [(a["id"], a["outcome"]) for a in listed["alerts"]] == [(2, None), (1, "hit")]
    with db.engine.connect() as conn:
        sent = [
            (r.event, r.alert_id) for r in conn.execute(sa.select(outbox).order_by(outbox.c.id))
        ]
        ids = {r.event_id for r in conn.execute(sa.select(outbox))}
    assert sent == [
        ("alert.opened", 1),
        ("alert.escalated", 1),
        ("alert.closed", 1),
        ("alert.opened", 2),
        ("alert.closed", 2),
    ]
    assert len(ids) == 5
    with db.engine.begin() as conn:
        conn.execute(outbox.update().where(outbox.c.alert_id == 1).values(delivered_at=50 * H))
    # history before 5 h and events delivered before 60 h go; the alerts stay
    assert db.prune(scores_before=5 * H, delivered_before=60 * H) == (4, 3)
    assert [s["at"][11:13] for s in views.pump(db.engine, "p1", clock(), H)["scores"]][:2] == [
        "05",
        "06",
    ]
    # the expired alert's horizon passes with no failure: a false alarm
    assert db.settle(now=12 * H + 48 * H - 1) == 0  # opened at 12 h
    assert db.settle(now=12 * H + 48 * H) == 1
    figures = views.alert_figures(db.engine)
    assert (figures.hits, figures.false_alarms, figures.precision) == (1, 1, 0.5)
    db.close()


def test_a_failure_makes_hits_with_lead_time_and_a_miss_when_no_alert_came(fleet_url: str) -> None:  # noqa: F811
    db = FleetDB(fleet_url, clock=Clock(1000 * H))
    db.ingest([row("p1", 10, 0.7), row("p1", 11, 0.7)])  # opened at 11 h
    assert db.feedback("p1", 41 * H, failure=True) == {"hits": [1], "missed": False}
    alert = views.alert_list(db.engine)["alerts"][0]
    assert (alert["status"], alert["outcome"], alert["lead_time_hours"]) == ("closed", "hit", 30.0)
    assert alert["history"][-1]["event"] == "failure"
    assert db.feedback("p2", 50 * H, failure=True) == {"hits": [], "missed": True}
    db.ingest([row("p3", 10, 0.7), row("p3", 11, 0.7)])  # opened 60 h before: too early
    assert db.feedback("p3", 71 * H, failure=True) == {"hits": [], "missed": True}
    db.settle()
    f = views.alert_figures(db.engine)
    assert (f.hits, f.misses, f.false_alarms, f.median_lead_time_hours) == (1, 2, 1, 30.0)
    db.close()


def simulated_rows(
    hours: int = 24 * 30, every: int = 2, seed: int = 3
) -> tuple[list[ScoredRow], list[tuple[str, float, bool]]]:
    """A simulated fleet's failures and maintenance (the simulator knows them), and
    scored windows every ``every`` hours whose risk rises as a failure nears (with
    noise): what a useful model says."""
    tables = simulate_fleet(SimulationConfig(pumps=12, days=hours // 24, seed=seed))
    events = tables.events.to_pandas()
    pumps = tables.readings.select(["pump_id", "pump_class", "site"]).to_pandas().drop_duplicates()
    rng = np.random.default_rng(seed)
    happened = [
        (str(e.pump_id), e.timestamp.value / 1e9, e.event_type == "failure")
        for e in events.itertuples()
    ]
    start = float(tables.readings.column("timestamp")[0].value) / 1e3  # ms
    rows = []
    for p in pumps.itertuples():
        fails = sorted(t for pid, t, f in happened if pid == p.pump_id and f)
        for k in range(0, hours, every):
            t = start + k * H
            ttf = min((f - t for f in fails if f > t), default=1e7) / H
            risk = 1 / (1 + np.exp((ttf - 24) / 6)) + rng.normal(0, 0.12)
            risk = float(np.clip(risk, 0, 1))
            rows.append(
                ScoredRow(
                    str(p.pump_id),
                    str(p.pump_class),
                    t,
                    max(0.0, ttf),
                    risk,
                    "1",
                    "champion",
                    site=str(p.site),
                    threshold=0.5,
                    horizon_hours=48.0,
                )
            )
    return sorted(rows, key=lambda r: r.at), sorted(happened, key=lambda e: e[1])


def test_a_simulated_fleet_hits_misses_false_alarms_and_lead_times(fleet_url: str) -> None:  # noqa: F811
    rows, happened = simulated_rows()
    end = rows[-1].at
    db = FleetDB(fleet_url, clock=Clock(end))
    feedback = []
    i = 0
    for at in sorted({r.at for r in rows}):
        while i < len(happened) and happened[i][1] <= at:
            pump, t, failure = happened[i]
            feedback.append((pump, t, failure, db.feedback(pump, t, failure)))
            i += 1
        db.ingest([r for r in rows if r.at == at])
    db.settle(now=end + 49 * H)
    with db.engine.connect() as conn:
        q = "SELECT id, pump_id, opened_at, outcome, lead_time_hours FROM fleet_alerts"
        alerts = list(conn.execute(sa.text(q)))
    failures = [(p, t) for p, t, f, _ in feedback if f]
    assert len(failures) >= 8 and len(alerts) >= 8
    # the oracle: a failure is missed iff no alert of its pump opened in [T - 48 h, T)
    for pump, t, failure, answer in feedback:
        opened = [a.id for a in alerts if a.pump_id == pump and t - 48 * H <= a.opened_at < t]
        assert set(answer["hits"]) <= set(opened) or not answer["hits"]
        if failure:
            assert answer["missed"] == (not opened)
    for a in alerts:
        events = [t for p, t, _f in happened if p == a.pump_id and a.opened_at <= t]
        follow = [t for t in events if t - a.opened_at <= 48 * H and t > a.opened_at]
        if follow:  # marked at the first event within its horizon, with its lead time
            assert a.outcome == "hit"
            assert a.lead_time_hours == pytest.approx((follow[0] - a.opened_at) / H, abs=1e-3)
        elif a.outcome is not None:
            assert a.outcome == "false_alarm"
    f = views.alert_figures(db.engine)
    hits = [a for a in alerts if a.outcome == "hit"]
    assert f.hits == len(hits) and f.misses == sum(p["missed"] for *_, p in feedback)
    assert f.precision == pytest.approx(f.hits / (f.hits + f.false_alarms))
    assert f.median_lead_time_hours == pytest.approx(
        statistics.median(a.lead_time_hours for a in hits)
    )
    # a model whose risk rises a day before failures: most alerts are right, hours ahead
    assert f.precision > 0.6 and 4 < f.median_lead_time_hours < 48
    db.close()


def test_the_batch_reads_say_which_engines_they_run_on() -> None:
    from sqlalchemy.dialects import mysql, postgresql, sqlite

    for dialect in (sqlite.dialect(), postgresql.psycopg.dialect()):
        known, live = lookups(dialect)
        assert "ids" in known.params and "ids" in live.params
    with pytest.raises(
        ValueError, match=r"^the fleet database runs on SQLite or PostgreSQL, not mysql$"
    ):
        lookups(mysql.dialect())


def test_a_drains_history_goes_in_pump_by_pump_and_each_pump_reads_in_time(
    fleet_url: str,  # noqa: F811
) -> None:
    """Rows of several batches in one drain take their history ids one pump after another
    (the (pump, time) index then takes them leaf page by leaf page), each pump's oldest
    first, two arms at the same time in the order they came; each pump's history reads
    as before, oldest first."""
    db = FleetDB(fleet_url, clock=Clock(10 * H))
    drain = [
        row("p2", 1, 0.1),
        row("p1", 1, 0.2),
        row("p2", 2, 0.3, arm="champion"),
        row("p2", 2, 0.4, arm="challenger"),
        row("p1", 2, 0.5),
        row("p1", 3, 0.6),
    ]
    db.ingest(drain)
    with db.engine.connect() as conn:
        q = "SELECT pump_id, failure_probability FROM fleet_scores ORDER BY id"
        assert [tuple(r) for r in conn.exec_driver_sql(q)] == [
            ("p1", 0.2), ("p1", 0.5), ("p1", 0.6), ("p2", 0.1), ("p2", 0.3), ("p2", 0.4),
        ]  # fmt: skip
    p2 = views.pump(db.engine, "p2", 10 * H, 4 * H)["scores"]
    assert [(s["at"][11:13], s["failure_probability"]) for s in p2] == [
        ("01", 0.1), ("02", 0.3), ("02", 0.4),
    ]  # fmt: skip
    db.close()
