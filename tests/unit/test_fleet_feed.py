"""Scoring never waits on, nor fails with, the fleet database (serve_apps/fleet_feed.py):
past its bound the feed drops rows and counts them; a database that cannot be reached
leaves /v1/score answering 200 and the fleet routes a 503 that says why."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest

from pumpfleet.features import FeatureSpec
from pumpfleet.fleet_store import FleetDB, ScoredRow
from pumpfleet.routing import Arm
from serve_apps.fleet_feed import FleetFeed, drivers_of
from serve_apps.model_set import ServedClass, ServedModel
from serve_apps.schemas import FleetConfig
from serve_apps.security import digest
from tests.conftest import free_port
from tests.serve_inproc import InProcessService, config

KEY = "scoring-key-0123456789"
SPEC = FeatureSpec(
    pump_class="esp", channels=["motor_temp"], window=4, stride=1, interval_seconds=3600,
    rul_cap_hours=100.0, horizon_hours=24.0, mean=[80.0], std=[10.0],
)  # fmt: skip


def run(x: np.ndarray) -> np.ndarray:
    return np.tile(np.array([[0.5, 0.9]], dtype=np.float32), (len(x), 1))


def test_a_full_queue_drops_and_counts_rather_than_waits(tmp_path: Path) -> None:
    db = FleetDB(f"sqlite:///{tmp_path / 'fleet.db'}")
    stop, gate = threading.Event(), threading.Event()
    dropped: list[int] = []

    def slow(db: FleetDB, budget: list[int]) -> list[ScoredRow]:
        gate.wait(30)  # the database is stalled
        return [ScoredRow("p1", "esp", 1.0, 10.0, 0.2)]

    feed = FleetFeed(db, stop, max_rows=100, explain_per_batch=0, on_drop=dropped.append)
    assert feed.offer(slow, 1)
    time.sleep(0.3)  # the feed thread holds the stalled job
    started = time.perf_counter()
    taken = [feed.offer(lambda db, b: [], 40) for _ in range(5)]
    assert time.perf_counter() - started < 0.1  # never waited
    assert taken == [True, True, False, False, False] and feed.dropped == 120
    assert dropped == [40, 40, 40]
    gate.set()
    assert feed.drain()
    stop.set()
    db.close()


def test_jobs_offered_within_the_gather_interval_go_in_one_drain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = FleetDB(f"sqlite:///{tmp_path / 'fleet.db'}")
    written: list[list[str]] = []
    ingest = db.ingest

    def counted(rows: list[ScoredRow]) -> None:
        written.append([r.pump_id for r in rows])
        ingest(rows)

    monkeypatch.setattr(db, "ingest", counted)
    stop = threading.Event()

    def row(pump: str) -> Callable[[FleetDB, list[int]], list[ScoredRow]]:
        return lambda db, budget: [ScoredRow(pump, "esp", 1.0, 10.0, 0.2)]

    feed = FleetFeed(db, stop, max_rows=100, explain_per_batch=0, gather_seconds=2.0)
    assert feed.offer(row("p1"), 1) and feed.drain()
    time.sleep(0.3)
    assert feed.offer(row("p2"), 1)
    time.sleep(0.2)  # a feed that did not wait would have written p2 on its own by now
    assert feed.offer(row("p3"), 1) and feed.offer(row("p4"), 1)
    assert feed.drain()
    assert written == [["p1"], ["p2", "p3", "p4"]]  # one commit for the three
    stop.set()
    db.close()


def test_drivers_are_the_channels_that_raised_the_risk_largest_first() -> None:
    got = drivers_of({"flow": 0.1, "motor_temp": 0.4, "vibration": -0.2, "current": 0.05, "x": 0})
    assert got == [{"sensor": "motor_temp", "weight": 0.4}, {"sensor": "flow", "weight": 0.1},
                   {"sensor": "current", "weight": 0.05}]  # fmt: skip


def test_scoring_answers_while_the_fleet_database_is_down(tmp_path: Path) -> None:
    down = f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/fleet?connect_timeout=2"
    served = ServedClass({Arm.CHAMPION: ServedModel("1", SPEC, run)}, weight=0.0)
    cfg = config(tmp_path, api_key_sha256=[digest(KEY)], fleet=FleetConfig(db_url=down))
    service = InProcessService(cfg, {"esp": served})
    try:
        with httpx.Client(base_url=service.url, headers={"x-api-key": KEY}, timeout=30) as c:
            body = {"pump_id": "esp-1", "pump_class": "esp", "readings": {"motor_temp": [90.0] * 4}}
            for _ in range(3):
                r = c.post("/v1/score", json=body)
                assert r.status_code == 200 and r.json()["failure_probability"] == pytest.approx(
                    0.9
                )
            assert service.scorer._hub is None  # tried off the request path, and failed
            fleet = c.get("/v1/fleet")
            assert fleet.status_code == 503
            assert "fleet database is not available" in fleet.json()["detail"]
    finally:
        service.close()


def test_the_staging_application_does_not_feed_the_fleet(tmp_path: Path) -> None:
    served = ServedClass({Arm.CHAMPION: ServedModel("1", SPEC, run)}, weight=0.0)
    cfg = config(tmp_path, api_key_sha256=[digest(KEY)], stage="staging")
    service = InProcessService(cfg, {"esp": served})
    try:
        service.scorer.start_fleet()
        with httpx.Client(base_url=service.url, headers={"x-api-key": KEY}, timeout=30) as c:
            body = {"pump_id": "esp-1", "pump_class": "esp", "readings": {"motor_temp": [90.0] * 4}}
            assert c.post("/v1/score", json=body).status_code == 200
        time.sleep(0.2)
        assert service.scorer._hub is None and not (tmp_path / "fleet.db").exists()
    finally:
        service.close()
