"""Readings over MQTT (issue 21): the agent against a real Mosquitto broker started here
(tests/unit/edge_broker.py). Every message goes through the doors' own validation and
the one scoring path; a reading is stored once whatever the broker or the link does;
alarms, pump state and health go out retained. Plus the pure parts: the payload mapping
and what a stored batch publishes."""

from __future__ import annotations

import json
import re
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_agent.agent import Agent
from edge_agent.config import PayloadMap
from edge_agent.mqtt import MqttBridge, PumpAlarm, publications, rejected_lines, topic_level
from edge_agent.payload import Message, parse_messages
from edge_agent.predict import Batch
from edge_agent.store import Store
from tests.unit.edge_broker import Broker, Recorder, client, delivered, retained
from tests.unit.edge_support import SPEC, EdgeWorkspace, agent_config, shared_workspace

W = 12
T0 = 1_780_000_000
PREFIX = "pumpfleet/rig-7"


@pytest.fixture
def ws(tmp_path_factory: pytest.TempPathFactory) -> EdgeWorkspace:
    return shared_workspace(tmp_path_factory.getbasetemp())


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path / "broker")
    yield b
    b.stop()


def reading(pump: str, h: int, failing: bool = False) -> dict[str, Any]:
    """Hour ``h`` of a pump, as edge_support.write_readings makes them (hot and shaky
    when ``failing``)."""
    rng = np.random.default_rng(zlib.crc32(f"{pump}:{h}".encode()))
    worn = 1.0 if failing else 0.1
    return {
        "pump_id": pump,
        "timestamp": T0 + 3600 * h,
        "motor_temp": round(70 + 15 * worn + rng.normal(0, 1), 3),
        "flow": round(100 + rng.normal(0, 10), 3),
        "vibration": round(1 + worn + rng.normal(0, 0.2), 3),
    }


def mqtt_config(ws: EdgeWorkspace, tmp: Path, broker: Broker, **kw: Any) -> Any:
    """An agent on the broker whose cloud is unreachable throughout (a closed port)."""
    mqtt = {"port": broker.port, "topics": ["site1/+/readings"], **kw.pop("mqtt", {})}
    return agent_config(ws, tmp / "agent", "http://127.0.0.1:9", mqtt=mqtt, **kw)


def publish(gateway: Any, readings: list[dict[str, Any]]) -> list[Any]:
    return [
        gateway.publish(f"site1/{r['pump_id']}/readings", json.dumps(r), qos=1) for r in readings
    ]


def wait_for(what: Callable[[], bool], timeout: float, why: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out: {why()}")
        time.sleep(0.05)


class Running:
    """The agent's loop in a thread of its own, as `pumpfleet-edge run` runs it (the
    agent is made there: its store belongs to that thread); the test reads the store
    through a connection of its own."""

    def __init__(self, cfg: Any) -> None:
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.keys: list[str] = []
        self.thread = threading.Thread(target=self._run, args=(cfg,), daemon=True)
        self.thread.start()
        assert self.ready.wait(60), "the agent did not start"
        self.reader = Store(cfg.state_dir / "store.db", readonly=True)

    def _run(self, cfg: Any) -> None:
        self.agent = Agent(cfg)
        bridge = self.agent.inputs[0]
        assert isinstance(bridge, MqttBridge) and bridge.subscribed.wait(20)
        self.ready.set()
        try:
            self.agent.run(self.stop)
            self.keys = stored_keys(self.agent.store)
        finally:
            self.agent.close()

    def counters(self) -> dict[str, int]:
        return self.reader.counters()

    def close(self) -> None:
        self.stop.set()
        self.agent.wake.set()
        self.thread.join(30)
        self.reader.close()


def stored_keys(store: Store) -> list[str]:
    return [str(r[0]) for r in store.db.execute("SELECT key FROM outbox ORDER BY id")]


def window_keys(pumps: list[str], hours: int) -> set[str]:
    return {f"rig-7:{p}:{(T0 + 3600 * h) * 10**9}" for p in pumps for h in range(W - 1, hours)}


# --- pure: the payload mapping and what a batch publishes --------------------------------


def test_a_payload_mapping_reads_pump_ids_from_the_topic_and_values_from_nested_keys() -> None:
    mapping = PayloadMap(
        pump_id="topic:1", timestamp="ts", values="data", fields={"flow": "extra.q"}
    )
    body = {
        "ts": T0,
        "data": {"motor_temp": 71.5, "vibration": 1.2, "colour": 3},
        "extra": {"q": 99},
    }
    arr = [body, {**body, "ts": T0 + 3600}]
    msgs = [
        Message("site1/P-17/readings", json.dumps(body).encode(), 0),
        Message("site1/P-18/readings", json.dumps(arr).encode(), 1),
    ]
    parsed = parse_messages(msgs, SPEC, mapping, 65536)
    got = [(r.pump_id, r.ts_ns // 10**9, r.values) for r in parsed.readings]
    values = {"motor_temp": 71.5, "flow": 99.0, "vibration": 1.2}
    assert got == [("P-17", T0, values), ("P-18", T0, values), ("P-18", T0 + 3600, values)]
    assert parsed.set_aside == [] and parsed.unknown_columns == {"colour"}


def test_messages_no_door_takes_are_set_aside_with_their_reason() -> None:
    good = reading("p1", 0)
    msgs = [
        b"not json",
        b"\xff\xfe",
        json.dumps({k: v for k, v in good.items() if k != "pump_id"}).encode(),
        json.dumps({**good, "motor_temp": 9999}).encode(),
        json.dumps({**good, "timestamp": "yesterday"}).encode(),
        json.dumps({**good, "flow": "lots"}).encode(),
        b"[" + b",".join([b"{}"] * 1001) + b"]",
        json.dumps([good, 7]).encode(),
        b"x" * 70_000,
        json.dumps(good).encode(),
    ]
    parsed = parse_messages(
        [Message("site1/p1/readings", m, i) for i, m in enumerate(msgs)], SPEC, PayloadMap(), 65536
    )
    assert [(s.line, s.reason) for s in parsed.set_aside] == [
        (0, "not JSON"),
        (1, "not UTF-8 text"),
        (2, "pump_id: nothing at 'pump_id'"),
        (3, "motor_temp: 9999 is outside its physical range -40 to 250"),
        (4, "timestamp: not a time: 'yesterday'"),
        (5, "flow: a number or null, not 'lots'"),
        (6, "1001 readings in one message, over 1000"),
        (7, "not an object: int"),
        (8, "70000 bytes, over the limit of 65536"),
    ]
    assert parsed.set_aside[0].text == "site1/p1/readings not json"
    # The good reading of message 7 and message 9 are read.
    assert [r.pump_id for r in parsed.readings] == ["p1", "p1"]


def _record(pump: str, ts: int, alert: bool, anomaly: bool = False) -> dict[str, Any]:
    row = {"pump_id": pump, "pump_class": "esp", "timestamp": ts, "model_version": "1",
           "rul_hours": 10.0, "failure_probability": 0.9 if alert else 0.1, "alert": alert,
           "health_score": None, "anomaly": anomaly, "explanation": None}  # fmt: skip
    return {"key": f"k{pump}{ts}", "alert": alert, "anomaly": anomaly, "row": row}


def test_a_batch_publishes_alarm_changes_and_throttled_state() -> None:
    known: dict[str, PumpAlarm] = {}
    first = Batch(
        records=[_record("p1", 1, False), _record("p2", 1, True), _record("p1", 2, False)]
    )
    out = publications(first, known, now=100.0, interval=30.0)
    assert [(t, b.get("event"), b["timestamp"]) for t, b in out] == [
        ("pumps/p2/alarm", "raised", 1),
        ("pumps/p1/state", None, 2),  # the pump's last record is its state
        ("pumps/p2/state", None, 1),
    ]
    # Nothing changed and the interval has not passed: nothing goes out.
    assert publications(Batch(records=[_record("p1", 3, False)]), known, 110.0, 30.0) == []
    out = publications(
        Batch(records=[_record("p1", 4, False), _record("p2", 4, False)]), known, 131.0, 30.0
    )
    assert [(t, b.get("event")) for t, b in out] == [
        ("pumps/p2/alarm", "cleared"),
        ("pumps/p1/state", None),  # 31 s since its last state
        ("pumps/p2/state", None),
    ]
    # An alarm raised and cleared within one batch says both, in order.
    flicker = [_record("p3", 1, True), _record("p3", 2, False)]
    out = publications(Batch(records=flicker), known, 140.0, 30.0)
    assert [(t, b.get("event"), b["timestamp"]) for t, b in out] == [
        ("pumps/p3/alarm", "raised", 1),
        ("pumps/p3/alarm", "cleared", 2),
        ("pumps/p3/state", None, 2),
    ]
    assert known["p1"] == PumpAlarm(False, 131.0) and known["p2"] == PumpAlarm(False, 131.0)
    assert topic_level("site/4+#") == "site_4__"


# --- against the broker ---------------------------------------------------------------------


def test_readings_over_mqtt_are_scored_alarmed_and_buffered_with_the_cloud_away(
    ws: EdgeWorkspace, broker: Broker, tmp_path: Path
) -> None:
    cfg = mqtt_config(ws, tmp_path, broker, heartbeat_seconds=0.5)
    alarms = Recorder(broker.port, f"{PREFIX}/pumps/+/alarm")
    run = Running(cfg)
    gateway = client(broker.port, "gateway")
    hours = 20
    for h in range(hours):  # hour by hour across the pumps, as a gateway sends them
        publish(gateway, [reading("p1", h), reading("hot", h, failing=True)])
    expected = window_keys(["p1", "hot"], hours)
    wait_for(lambda: run.counters()["scored"] == len(expected), 60, lambda: str(run.counters()))
    time.sleep(1.0)  # a heartbeat: the health goes out
    seen = retained(broker.port, f"{PREFIX}/#")
    run.close()
    gateway.loop_stop()
    store = Store(cfg.state_dir / "store.db")
    assert sorted(stored_keys(store)) == sorted(expected)
    c = store.counters()
    assert c["mqtt_messages"] == 2 * hours and c["uploaded"] == 0 and c["stale_readings"] == 0
    rows = [json.loads(r[0]) for r in store.db.execute("SELECT payload FROM outbox")]
    hot = sorted((r for r in rows if r["pump_id"] == "hot"), key=lambda r: r["timestamp"])
    assert c["alerts"] == sum(r["alert"] for r in hot) >= 1
    assert not any(r["alert"] for r in rows if r["pump_id"] == "p1")
    # An alarm event each time the hot pump's alarm changed, in order; none for p1.
    changes, before = [], False
    for r in hot:
        if r["alert"] != before:
            changes.append(("raised" if r["alert"] else "cleared", r["timestamp"]))
            before = r["alert"]
    alarms.close()
    events = [(t, b["event"], b["timestamp"]) for t, b in alarms.messages]
    assert events == [(f"{PREFIX}/pumps/hot/alarm", *e) for e in changes]
    # A raised alarm says what drives it: the stored record's explanation.
    explained = {r["timestamp"]: r["explanation"] for r in hot if r["explanation"]}
    raised = [b for _, b in alarms.messages if b["event"] == "raised"]
    assert [b["explanation"] for b in raised] == [explained[b["timestamp"]] for b in raised]
    assert all(b["explanation"]["top_blocks"] for b in raised)
    # Retained: each pump's state (its last window) and the hot pump's last alarm.
    last = (T0 + 3600 * (hours - 1)) * 10**9
    assert seen[f"{PREFIX}/pumps/p1/state"]["timestamp"] == last
    assert seen[f"{PREFIX}/pumps/p1/state"]["alert"] is False
    alarm = seen[f"{PREFIX}/pumps/hot/alarm"]
    assert alarm == alarms.messages[-1][1] and alarm["pump_id"] == "hot"
    health = seen[f"{PREFIX}/health"]
    assert health["device_id"] == "rig-7" and health["model_version"] == 1
    # It kept trying: the batch it holds, refused by the closed port.
    assert re.fullmatch(
        r"upload [0-9a-f]{12}-\d{10}-\d{10}: \[Errno 111\] Connection refused",
        health["last_upload_error"],
    )
    assert seen[f"{PREFIX}/status"] == "online"
    # Closed cleanly, it says so; the retained alarm and state stay for the HMI.
    after = retained(broker.port, f"{PREFIX}/#")
    assert after[f"{PREFIX}/status"] == "offline"
    assert after[f"{PREFIX}/pumps/hot/alarm"] == alarm


def test_a_broker_restart_mid_stream_loses_and_doubles_nothing(
    ws: EdgeWorkspace, broker: Broker, tmp_path: Path
) -> None:
    cfg = mqtt_config(ws, tmp_path, broker)
    run = Running(cfg)
    gateway = client(broker.port, "gateway", clean=False)
    pumps, hours = ["p1", "p2", "p3"], 40
    sent: list[Any] = []
    for h in range(hours):
        sent += publish(gateway, [reading(p, h) for p in pumps])
        if h == 15:
            broker.restart(down_seconds=1.0)  # the gateway queues meanwhile, then resends
        time.sleep(0.02)
    expected = window_keys(pumps, hours)
    wait_for(lambda: delivered(gateway, sent), 60, lambda: "gateway still sending")
    wait_for(lambda: run.counters()["scored"] >= len(expected), 60, lambda: str(run.counters()))
    time.sleep(0.5)  # anything delivered twice arrives now
    c = run.counters()
    run.close()
    keys = run.keys
    gateway.loop_stop()
    assert len(keys) == len(set(keys)) and set(keys) == expected
    assert c["scored"] == len(expected)  # none scored twice either
    # What came again (the gateway's resends, the broker's redeliveries) was skipped.
    assert c["mqtt_messages"] - c["stale_readings"] == len(pumps) * hours


def test_messages_stored_but_not_acknowledged_are_redelivered_and_stored_once(
    ws: EdgeWorkspace, broker: Broker, tmp_path: Path
) -> None:
    """The agent dies after its commit and before its acknowledgements: the broker
    delivers those messages again to the restarted agent, which skips them."""
    cfg = mqtt_config(ws, tmp_path, broker)
    first = Agent(cfg)
    bridge = first.inputs[0]
    assert isinstance(bridge, MqttBridge) and bridge.subscribed.wait(20)
    acked: list[int] = []
    bridge.client.ack = lambda mid, qos: acked.append(mid)  # it dies before acking
    gateway = client(broker.port, "gateway")
    publish(gateway, [reading("p1", h) for h in range(20)])
    wait_for(lambda: bridge.waiting() == 20, 20, lambda: f"{bridge.waiting()} waiting")
    time.sleep(0.1)  # quiet: the batch is due
    assert bridge.drain(first) == 20
    assert first.store.counters()["scored"] == 20 - W + 1 and len(acked) == 20
    # Killed: the connection drops without a word (no DISCONNECT, no acks).
    bridge.client.loop_stop()
    bridge.client.socket().close()
    first.store.close()
    publish(gateway, [reading("p1", h) for h in range(20, 25)])
    run = Running(cfg)
    wait_for(lambda: run.counters()["scored"] == 25 - W + 1, 30, lambda: str(run.counters()))
    time.sleep(0.5)
    c = run.counters()
    run.close()
    keys = run.keys
    gateway.loop_stop()
    assert sorted(keys) == sorted(window_keys(["p1"], 25))
    assert c["mqtt_redelivered"] == 20 and c["stale_readings"] == 20
    assert c["mqtt_messages"] == 45


def test_a_burst_far_above_the_normal_rate_is_scored_whole(
    ws: EdgeWorkspace, broker: Broker, tmp_path: Path
) -> None:
    """60 pumps' readings for 40 hours at once: 2,400 messages in well under a second,
    against one a minute per pump in the field."""
    cfg = mqtt_config(ws, tmp_path, broker)
    run = Running(cfg)
    gateway = client(broker.port, "gateway")
    pumps, hours = [f"p{i:02d}" for i in range(60)], 40
    started = time.monotonic()
    sent = publish(gateway, [reading(p, h) for h in range(hours) for p in pumps])
    expected = window_keys(pumps, hours)
    wait_for(lambda: delivered(gateway, sent), 60, lambda: "gateway still sending")
    wait_for(lambda: run.counters()["scored"] == len(expected), 120, lambda: str(run.counters()))
    took = time.monotonic() - started
    c = run.counters()
    run.close()
    keys = run.keys
    gateway.loop_stop()
    assert sorted(keys) == sorted(expected) and c["stale_readings"] == 0
    assert c["mqtt_messages"] == len(pumps) * hours
    assert took < 120


def test_malformed_messages_are_set_aside_with_a_reason_and_the_rest_scored(
    ws: EdgeWorkspace, broker: Broker, tmp_path: Path
) -> None:
    cfg = mqtt_config(ws, tmp_path, broker)
    run = Running(cfg)
    gateway = client(broker.port, "gateway")
    good = [reading("p1", h) for h in range(15)]
    bad = [b"{oops", b"\xff", json.dumps({**good[0], "vibration": -5e9}).encode(), b"x" * 70_000]
    for i, r in enumerate(good):
        publish(gateway, [r])
        if i < len(bad):
            gateway.publish("site1/p1/readings", bad[i], qos=1)
    wait_for(lambda: run.counters()["scored"] == 15 - W + 1, 30, lambda: str(run.counters()))
    wait_for(lambda: run.counters()["mqtt_set_aside"] == 4, 10, lambda: str(run.counters()))
    c = run.counters()
    run.close()
    gateway.loop_stop()
    assert c["mqtt_messages"] == 19 and c["rows_set_aside"] == 4
    lines = rejected_lines(cfg.state_dir)
    assert [line["reason"] for line in lines] == [
        "not JSON",
        "not UTF-8 text",
        "vibration: -5e+09 is outside its physical range 0 to 100",
        "70000 bytes, over the limit of 65536",
    ]
    assert lines[0]["message"] == "site1/p1/readings {oops"
