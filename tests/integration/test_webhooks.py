"""Webhooks of alert events (pumpfleet/webhooks.py, serve_apps/webhook_sender.py) against
a real HTTP receiver on 127.0.0.1 that fails (500), then times out, then recovers: every
event is delivered, signed (HMAC-SHA256 over "<timestamp>.<body>"), and none is lost
across a restart of the service on the same database; on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import sqlalchemy as sa

from pumpfleet import webhooks
from pumpfleet.features import FeatureSpec
from pumpfleet.fleet_schema import outbox
from pumpfleet.routing import Arm
from serve_apps.model_set import ServedClass, ServedModel
from serve_apps.schemas import FleetConfig
from serve_apps.security import digest
from tests.conftest import serve_in_background
from tests.postgres_server import fleet_url, pg_server  # noqa: F401 (fixtures)
from tests.serve_inproc import InProcessService, config

KEY = "scoring-key-0123456789"
SECRET = "webhook-secret-0123456789"
W = 4
SPEC = FeatureSpec(
    pump_class="esp", channels=["motor_temp"], window=W, stride=1, interval_seconds=3600,
    rul_cap_hours=100.0, horizon_hours=24.0, mean=[80.0], std=[10.0],
)  # fmt: skip


def run(x: np.ndarray) -> np.ndarray:
    risk = np.clip(0.5 + np.nan_to_num(np.asarray(x, dtype=np.float64)[:, :, 0]).mean(1) / 4, 0, 1)
    return np.stack([1.0 - risk, risk], axis=1).astype(np.float32)


class Receiver:
    """A webhook receiver whose answers the test sets: ``fail`` (500), ``slow`` (answers
    after the sender's timeout) or ``ok`` (200). It checks each signature and keeps
    what it got."""

    def __init__(self) -> None:
        self.mode = "fail"
        self.got: list[tuple[str, str, dict[str, Any]]] = []  # (mode, event id, body)
        self.bad_signatures = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                ok = webhooks.verify(SECRET, self.headers[webhooks.TIMESTAMP], body,
                                     self.headers[webhooks.SIGNATURE], time.time())  # fmt: skip
                event = json.loads(body)
                with receiver.lock:
                    mode = receiver.mode
                    receiver.bad_signatures += not ok
                    receiver.got.append((mode, event["id"], event))
                if mode == "slow":
                    time.sleep(1.0)
                self.send_response(500 if mode == "fail" else 200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = serve_in_background(self.server)

    def seen(self, mode: str) -> int:
        with self.lock:
            return sum(m == mode for m, _, _ in self.got)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def start(tmp_path: Path, url: str, receiver: Receiver) -> InProcessService:
    served = ServedClass({Arm.CHAMPION: ServedModel("2", SPEC, run)}, weight=0.0)
    fleet = FleetConfig(
        db_url=url, webhook_urls=[receiver.url], webhook_secret=SECRET,
        webhook_timeout_seconds=0.3, webhook_backoff_seconds=0.1,
        webhook_backoff_cap_seconds=0.4, webhook_poll_seconds=0.05,
    )  # fmt: skip
    cfg = config(tmp_path, api_key_sha256=[digest(KEY)], fleet=fleet)
    service = InProcessService(cfg, {"esp": served})
    assert service.scorer.fleet_hub() is not None  # its sender starts with it
    return service


def wait_for(what: str, check: Callable[[], bool], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def outbox_rows(url: str) -> list[Any]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.select(outbox).order_by(outbox.c.id)))
    finally:
        engine.dispose()


def test_every_event_is_delivered_through_an_outage_a_timeout_and_a_restart(
    tmp_path: Path,
    fleet_url: str,  # noqa: F811
    receiver: Receiver,
) -> None:
    first = start(tmp_path, fleet_url, receiver)
    try:
        with httpx.Client(base_url=first.url, headers={"x-api-key": KEY}, timeout=30) as c:
            for temp in (95.0, 95.0, 100.0):  # opened after two windows, escalated at 1.0
                body = {
                    "pump_id": "esp-1",
                    "pump_class": "esp",
                    "readings": {"motor_temp": [temp] * W},
                }
                assert c.post("/v1/score", json=body).status_code == 200
            hub = first.scorer.fleet_hub()
            assert hub is not None and hub.feed.drain()
            # the receiver is down: every event is tried, answered 500, and kept
            wait_for("a 500 for each event", lambda: receiver.seen("fail") >= 4)
            receiver.mode = "slow"
            wait_for("a timed-out delivery", lambda: receiver.seen("slow") >= 1)
            (alert,) = c.get("/v1/alerts").json()["alerts"]
            closed = c.post(f"/v1/alerts/{alert['id']}/close", json={"by": "crew", "note": "done"})
            assert closed.status_code == 200
    finally:
        first.close()  # a restart: whatever was not delivered is still in the database
    waiting = [r for r in outbox_rows(fleet_url) if r.delivered_at is None]
    assert len(waiting) == 3 and all(r.last_error for r in waiting[:2])
    assert any(r.attempts >= 2 for r in waiting)  # retried, backing off
    receiver.mode = "ok"
    second = start(tmp_path, fleet_url, receiver)
    try:
        wait_for(
            "every event delivered", lambda: all(r.delivered_at for r in outbox_rows(fleet_url))
        )
    finally:
        second.close()
    rows = outbox_rows(fleet_url)
    delivered = {event_id: event for mode, event_id, event in receiver.got if mode == "ok"}
    # at least once: every event id of the outbox reached the receiver, none unsigned
    assert set(delivered) == {r.event_id for r in rows}
    assert [r.event for r in rows] == ["alert.opened", "alert.escalated", "alert.closed"]
    assert [delivered[r.event_id]["event"] for r in rows] == [r.event for r in rows]
    assert delivered[rows[2].event_id]["alert"]["status"] == "closed"
    assert receiver.bad_signatures == 0
    # the ids let a receiver drop what it got twice (a delivery timed out, then retried)
    assert len(receiver.got) > len(delivered)


def test_a_signature_verifies_only_with_its_secret_body_and_a_fresh_timestamp() -> None:
    body = b'{"id":"e1"}'
    sig = webhooks.sign(SECRET, "1000", body)
    assert sig.startswith("sha256=") and len(sig) == 7 + 64
    assert webhooks.verify(SECRET, "1000", body, sig, now=1100)
    assert not webhooks.verify("other-secret", "1000", body, sig, now=1100)
    assert not webhooks.verify(SECRET, "1000", body + b" ", sig, now=1100)
    assert not webhooks.verify(SECRET, "1000", body, sig, now=1000 + 301)  # a replay
    assert not webhooks.verify(SECRET, "soon", body, sig, now=1000)
    b = webhooks.Backoff(base=1.0, cap=10.0)
    assert [b.delay(n) for n in (1, 2, 3, 4, 5)] == [1.0, 2.0, 4.0, 8.0, 10.0]
