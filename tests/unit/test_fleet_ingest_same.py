"""``FleetDB.ingest`` through prepared statements (pumpfleet/fleet_batch.py) leaves the
database exactly as the ingest before it did, on SQLite and on a real PostgreSQL: the
same pumps, score history (each pump's rows in its order; a drain's rows take their ids
pump by pump), alerts, alert history and webhook outbox, value for value and type for
type, over batches that mix new and known pumps, rows out of order and older than a
pump's latest, missing thresholds, new sites, devices and drivers, two horizons, and
alerts that open, escalate, clear under a crew and expire; and a batch leaves the same
state as its rows ingested one at a time."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from pumpfleet.fleet_alerts import AlertRules
from pumpfleet.fleet_store import FleetDB, ScoredRow
from tests.postgres_server import PostgresServer, pg_server  # noqa: F401 (fixture)
from tests.unit.fleet_ingest_before import FleetDBBefore

H = 3600.0
TABLES = {
    "fleet_pumps": "pump_id",
    "fleet_scores": "pump_id, at, id",  # each pump's history: ids are in pump order
    "fleet_alerts": "id",
    "fleet_alert_events": "id",
    "fleet_outbox": "id",
}


@pytest.fixture(params=["sqlite", "postgresql"])
def new_url(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], str]:
    """Fresh, empty fleet databases on one engine."""
    made = [0]

    def sqlite() -> str:
        made[0] += 1
        return f"sqlite:///{tmp_path / f'fleet{made[0]}.db'}"

    if request.param == "sqlite":
        return sqlite
    server: PostgresServer = request.getfixturevalue("pg_server")
    return server.new_database


class Clock:
    def __init__(self) -> None:
        self.t = 1_000 * H

    def __call__(self) -> float:
        return self.t


def batches(seed: int = 5, n: int = 10) -> list[list[ScoredRow]]:
    """Batches of scored windows: a fleet growing from 6 to 12 pumps, risk that rises,
    spikes and falls, a few windows older than their pump's latest, rows without a
    threshold or horizon (an edge device's class the cloud does not serve)."""
    rng = random.Random(seed)
    out = []
    for b in range(n):
        rows = []
        for p in range(6 + b - b // 3):
            hot = (p + b) % 5 in (1, 2)
            h = 24.0 if p == 4 and b >= 6 else 48.0
            for k in range(rng.choice([1, 1, 2, 3])):
                risk = rng.choice([0.95, 0.7, 0.6]) if hot else rng.choice([0.1, 0.2, 0.3, 0.45])
                at = (10 * b + k + rng.choice([0, 0, 0, -15])) * H
                rows.append(
                    ScoredRow(
                        f"p{p:02d}",
                        "esp" if p % 3 else "rod",
                        at,
                        rul_hours=round(200 * (1 - risk), 3),
                        failure_probability=risk,
                        model_version=str(1 + b // 4),
                        arm=rng.choice(["champion", "challenger"]),
                        health_score=rng.choice([None, 0.5 + p / 100]),
                        anomaly=rng.choice([None, False, True]),
                        site=rng.choice([None, f"site-{p % 3}", f"site-{p % 2}"]),
                        device_id=rng.choice([None, None, f"rig-{p}"]),
                        drivers=rng.choice([None, None, [{"sensor": "flow", "weight": risk / 3}]]),
                        threshold=rng.choice([0.5, 0.5, None, 0.55]),
                        horizon_hours=rng.choice([None, h, h]),
                    )
                )
        rng.shuffle(rows)
        out.append(rows)
    return out


def run(db: FleetDB, clock: Clock, one_at_a_time: bool = False) -> list[Any]:
    """Every batch in turn, a crew taking the oldest open alert after each batch
    and a failure after the sixth; the events the ingests returned."""
    said = []
    for b, rows in enumerate(batches()):
        clock.t += 60
        if one_at_a_time:
            for r in sorted(rows, key=lambda r: r.at):
                said.extend(db.ingest([r]))
        else:
            said.extend(db.ingest(rows))
        with db.engine.connect() as conn:
            q = "SELECT min(id) FROM fleet_alerts WHERE status = 'open'"
            oldest = conn.execute(sa.text(q)).scalar()
        if oldest is not None:
            db.act(int(oldest), "ack", "maria")
        if b == 6:
            db.feedback("p01", 55 * H, failure=True)
    return said


def dump(db: FleetDB) -> dict[str, list[Any]]:
    """Every table's rows as the driver reads them, each value with its type; webhook
    event ids by their order (they are random)."""
    out: dict[str, list[Any]] = {}
    ids: dict[str, int] = {}
    with db.engine.connect() as conn:
        for table, key in TABLES.items():
            rows = conn.exec_driver_sql(f"SELECT * FROM {table} ORDER BY {key}").mappings()
            out[table] = []
            for r in rows:
                row = dict(r)
                if table == "fleet_scores":
                    # a drain's history rows go in pump by pump (FleetDB.history), the
                    # ingest before's and a row at a time's in time order: the same rows
                    # in each pump's order, under other ids
                    del row["id"]
                if table == "fleet_outbox":
                    row["event_id"] = ids.setdefault(row["event_id"], len(ids))
                    body = json.loads(row["body"])
                    body["id"] = ids[body["id"]]
                    row["body"] = body
                out[table].append({k: (type(v).__name__, v) for k, v in row.items()})
    return out


def test_a_batch_leaves_the_state_the_ingest_before_left(new_url: Callable[[], str]) -> None:
    states, said = [], []
    for kind in (FleetDB, FleetDBBefore):
        clock = Clock()
        db = kind(new_url(), AlertRules(), ["http://127.0.0.1:1/hook"], clock=clock)
        said.append(run(db, clock))
        states.append(dump(db))
        db.close()
    new, before = states
    assert said[0] == said[1]
    events = {e for e, _ in said[0]}
    assert events == {"opened", "escalated", "closed"}  # and cleared, under a crew:
    assert {e["event"][1] for e in new["fleet_alert_events"]} >= {"cleared", "acknowledged"}
    assert len(new["fleet_pumps"]) == 12 and len(new["fleet_scores"]) > 150
    assert any(p["horizon_hours"][1] == 24.0 for p in new["fleet_alerts"])
    for table in TABLES:
        assert new[table] == before[table], table


def test_a_batch_leaves_the_state_its_rows_one_at_a_time_leave(
    new_url: Callable[[], str],
) -> None:
    states, said = [], []
    for one in (False, True):
        clock = Clock()
        db = FleetDB(new_url(), AlertRules(), ["http://127.0.0.1:1/hook"], clock=clock)
        said.append(run(db, clock, one_at_a_time=one))
        states.append(dump(db))
        db.close()
    batch, single = states
    assert said[0] == said[1]
    for table in ("fleet_pumps", "fleet_scores", "fleet_alerts", "fleet_alert_events"):
        assert batch[table] == single[table], table
    # a webhook's body shows the alert as it stood at the event: a batch writes the
    # risk of its alerts' other windows at its end, so only those two fields may differ
    for b, s in zip(batch["fleet_outbox"], single["fleet_outbox"], strict=True):
        for row in (b, s):
            for k in ("risk", "updated_at"):
                row["body"][1]["alert"].pop(k, None)
        assert b == s


def test_a_batch_whose_first_pump_only_sent_older_windows(new_url: Callable[[], str]) -> None:
    # the ingest before failed here: the first pump's row went back as read, pump_id too,
    # and the update then wanted a pump_id of every other pump
    db = FleetDB(new_url(), clock=Clock())
    db.ingest([ScoredRow("p1", "esp", 10 * H, 5.0, 0.2), ScoredRow("p2", "esp", 10 * H, 5.0, 0.2)])
    db.ingest([ScoredRow("p1", "esp", 5 * H, 9.0, 0.3), ScoredRow("p2", "esp", 11 * H, 4.0, 0.3)])
    with db.engine.connect() as conn:
        q = "SELECT pump_id, last_reading_at, rul_hours FROM fleet_pumps ORDER BY pump_id"
        assert [tuple(r) for r in conn.exec_driver_sql(q)] == [("p1", 36000.0, 5.0),
                                                               ("p2", 39600.0, 4.0)]  # fmt: skip
        assert conn.exec_driver_sql("SELECT count(*) FROM fleet_scores").scalar() == 4
    db.close()
