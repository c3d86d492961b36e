"""The edge agent as a process reading MQTT, killed with SIGKILL at random points while a
gateway streams readings through a real Mosquitto broker: the broker delivers again what
the agent had not acknowledged, and every window is stored and scored exactly once.

No Ray: the agent runs in subprocesses, the broker is started by the test
(tests/unit/edge_broker.py)."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from edge_agent.store import Store
from tests.unit.edge_broker import Broker, client, retained
from tests.unit.edge_support import EdgeWorkspace, agent_config, shared_workspace
from tests.unit.test_edge_mqtt import T0, reading

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
W = 12
KILLS = 6
PUMPS = ["p1", "p2", "p3", "p4"]


@pytest.fixture
def ws(tmp_path_factory: pytest.TempPathFactory) -> EdgeWorkspace:
    return shared_workspace(tmp_path_factory.getbasetemp(), versions=1)


def start(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "edge_agent.cli", "run", "--config", str(config)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def counters(state: Path) -> dict[str, int]:
    store = Store(state / "store.db", readonly=True)
    try:
        return store.counters()
    finally:
        store.close()


def test_sigkill_mid_stream_every_reading_is_stored_once(ws: EdgeWorkspace, tmp_path: Path) -> None:
    broker = Broker(tmp_path / "broker")
    cfg = agent_config(
        ws, tmp_path / "agent", None, mqtt={"port": broker.port, "topics": ["site1/+/readings"]}
    )
    config = tmp_path / "agent.json"
    config.write_text(cfg.model_dump_json())
    gateway = client(broker.port, "gateway", clean=False)
    hours = [0]
    stop = threading.Event()

    def stream() -> None:
        """A gateway sending an hour of every pump each 25 ms."""
        while not stop.is_set():
            for p in PUMPS:
                r = reading(p, hours[0])
                gateway.publish(f"site1/{p}/readings", json.dumps(r), qos=1)
            hours[0] += 1
            stop.wait(0.025)

    rng = random.Random(21)
    feeder = threading.Thread(target=stream)
    proc: subprocess.Popen[bytes] | None = None
    try:
        proc = start(config)
        # Its first start installs the bundle, then subscribes: readings sent before that
        # would not be kept for it.
        deadline = time.monotonic() + 60
        while (
            retained(broker.port, "pumpfleet/rig-7/status", 0.3).get("pumpfleet/rig-7/status")
            != "online"
        ):
            assert time.monotonic() < deadline, "the agent never came online"
        feeder.start()
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.5, 1.5))
            proc.kill()
            proc.wait()
            proc = start(config)
        time.sleep(1.0)
        stop.set()
        feeder.join()
        n = hours[0]
        expected = len(PUMPS) * (n - W + 1)
        deadline = time.monotonic() + 120
        while counters(cfg.state_dir)["scored"] < expected and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)  # anything delivered twice comes now
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        stop.set()
        if proc is not None and proc.poll() is None:
            proc.kill()
        gateway.loop_stop()
        broker.stop()
    store = Store(cfg.state_dir / "store.db", readonly=True)
    keys = [str(r[0]) for r in store.db.execute("SELECT key FROM outbox")]
    c: dict[str, Any] = store.counters()
    store.close()
    want = {f"rig-7:{p}:{(T0 + 3600 * h) * 10**9}" for p in PUMPS for h in range(W - 1, n)}
    assert set(keys) == want, (len(want - set(keys)), len(set(keys) - want))
    assert c["scored"] == len(want)  # none scored twice
    # The kills left messages unacknowledged; the broker sent them again; they were
    # skipped as replays, and nothing else was.
    assert c["mqtt_redelivered"] > 0
    assert c["stale_readings"] == c["mqtt_messages"] - len(PUMPS) * n
    print(json.dumps({"kills": KILLS, "readings": len(PUMPS) * n, **c}))
