"""The site's MQTT broker as a door and an alarm panel (paho-mqtt).

In: the agent subscribes to ``mqtt.topics`` with QoS 1 on a persistent session and
acknowledges a message only once what it carried is committed to the store (paho's
manual acks). A message the agent never acknowledged — it was killed, the broker or the
link went down — is delivered again, and is stored once: a pump's state keeps its last
reading's time in the same transaction as the records, and a reading not newer than
that is skipped as a replay (:mod:`edge_agent.windows`). A message that cannot be used
is set aside with its reason (``<state_dir>/mqtt/rejected.jsonl``), counted, and
acknowledged.

Out, under ``<prefix>`` (``pumpfleet/<device_id>``), QoS 1, retained:
``pumps/<pump>/alarm`` when a pump's alarm (an alert or an anomaly) is raised or
cleared, with what drives it; ``pumps/<pump>/state``, the pump's latest scores, when its
alarm changes and at most every ``state_interval_seconds`` otherwise; ``health``, the
agent's health (what it uploads), every ``heartbeat_seconds``; ``status``, ``online``
or ``offline`` (the broker publishes ``offline`` as the will if the agent vanishes).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent.config import AgentConfig, MqttConfig
from edge_agent.payload import Message, parse_messages
from edge_agent.predict import Batch
from edge_agent.source import SetAside
from pumpfleet.errors import InputError

if TYPE_CHECKING:
    from edge_agent.agent import Agent

log = logging.getLogger(__name__)

REJECTED_MAX_BYTES = 1 << 20  # rejected.jsonl is rotated (one old file kept) past this
LATENCIES_KEPT = 5000
DRAIN_MAX = 5000  # messages scored in one transaction, at most
STATE_FIELDS = (
    "pump_id",
    "pump_class",
    "timestamp",
    "model_version",
    "rul_hours",
    "failure_probability",
    "alert",
    "health_score",
    "anomaly",
)


@dataclass(frozen=True)
class Received:
    message: Message
    mid: int
    qos: int
    generation: int  # which connection it came on: acks go back on that one only
    at: float  # time.monotonic() when it arrived
    dup: bool


def topic_level(pump_id: str) -> str:
    """A pump id as one topic level (``/``, ``+`` and ``#`` cannot be in one)."""
    return "".join("_" if ch in "/+#" else ch for ch in pump_id)


@dataclass
class PumpAlarm:
    alarm: bool
    published_at: float


def publications(
    batch: Batch, known: dict[str, PumpAlarm], now: float, interval: float
) -> list[tuple[str, dict[str, Any]]]:
    """What a stored batch publishes (``(topic under the prefix, payload)``, all
    retained), updating ``known`` (each pump's alarm and when its state went out): an
    alarm event each time a pump's alarm is raised or cleared (records in time order),
    and its state after the batch where its alarm changed or ``interval`` has passed."""
    out: list[tuple[str, dict[str, Any]]] = []
    last: dict[str, dict[str, Any]] = {}
    changed: set[str] = set()
    for r in batch.records:  # in time order within a pump
        row = r["row"]
        pump = row["pump_id"]
        alarm = bool(r["alert"] or r["anomaly"])
        before = known.get(pump)
        if alarm != (before.alarm if before is not None else False):
            body = {"event": "raised" if alarm else "cleared", **_state(row)}
            if alarm:
                body["explanation"] = row.get("explanation")
            out.append((f"pumps/{topic_level(pump)}/alarm", body))
            changed.add(pump)
        published = before.published_at if before is not None else None
        known[pump] = PumpAlarm(alarm, published if published is not None else -math.inf)
        last[pump] = row
    for pump, row in last.items():
        if pump in changed or now - known[pump].published_at >= interval:
            out.append((f"pumps/{topic_level(pump)}/state", _state(row)))
            known[pump] = PumpAlarm(known[pump].alarm, now)
    return out


def _state(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row.get(k) for k in STATE_FIELDS}


class MqttBridge:
    """The agent's MQTT client: an :class:`edge_agent.agent.Input` and a listener."""

    def __init__(
        self,
        cfg: AgentConfig,
        wake: threading.Event | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        try:
            import paho.mqtt.client as paho
        except ModuleNotFoundError:
            raise InputError("mqtt needs the paho-mqtt package (pip install '.[edge]')") from None
        assert cfg.mqtt is not None
        self.m: MqttConfig = cfg.mqtt
        self.cfg = cfg
        self.prefix = cfg.mqtt_prefix
        self.clock = clock
        self.wake = wake or threading.Event()
        self._lock = threading.Lock()
        self._queue: list[Received] = []
        self._last_at = 0.0
        self.generation = 0
        self.connected = threading.Event()
        self.subscribed = threading.Event()  # the broker confirmed the subscriptions
        self.known: dict[str, PumpAlarm] = {}
        self.next_health = 0.0
        # Milliseconds from a message's arrival to its commit, and of scoring a batch
        # (parse, score, explain, commit): the latest, for the health it publishes.
        self.latency_ms: deque[float] = deque(maxlen=LATENCIES_KEPT)
        self.batch_ms: deque[float] = deque(maxlen=LATENCIES_KEPT)
        self.batches = 0
        self.rejected = cfg.state_dir / "mqtt" / "rejected.jsonl"
        self.rejected.parent.mkdir(parents=True, exist_ok=True)
        client_id = self.m.client_id or f"pumpfleet-{cfg.device_id}"
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=False,  # the broker keeps what this agent has not acknowledged
            protocol=paho.MQTTv311,
            manual_ack=True,
        )
        if self.m.username is not None:
            password = self.m.password_file.read_text().strip() if self.m.password_file else None
            self.client.username_pw_set(self.m.username, password)
        if self.m.tls:
            self.client.tls_set(ca_certs=str(self.m.ca_file) if self.m.ca_file else None)
        self.client.will_set(f"{self.prefix}/status", "offline", qos=1, retain=True)
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        # What is published while the broker is away waits here, up to this many.
        self.client.max_queued_messages_set(10_000)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.connect_async(self.m.host, self.m.port, self.m.keepalive_seconds)
        self.client.loop_start()

    # --- the network thread -------------------------------------------------------------

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            log.warning("mqtt %s:%d refused the connection: %s", self.m.host, self.m.port, reason)
            return
        with self._lock:
            self.generation += 1
        client.subscribe([(t, self.m.qos) for t in self.m.topics])
        self.connected.set()
        log.info("mqtt: connected to %s:%d, reading %s", self.m.host, self.m.port, self.m.topics)

    def _on_subscribe(self, client: Any, *_: Any) -> None:
        # Online: readings published from now on reach this agent.
        client.publish(f"{self.prefix}/status", "online", qos=1, retain=True)
        self.subscribed.set()

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        self.connected.clear()
        log.warning("mqtt: disconnected (%s); reconnecting", reason)

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        now = self.clock()
        with self._lock:
            got = Received(
                Message(msg.topic, bytes(msg.payload), 0),
                msg.mid,
                msg.qos,
                self.generation,
                now,
                bool(msg.dup),
            )
            first = not self._queue
            self._queue.append(got)
            self._last_at = now
        if first:
            self.wake.set()

    # --- the agent's thread -------------------------------------------------------------

    def waiting(self) -> int:
        with self._lock:
            return len(self._queue)

    def due_in(self) -> float | None:
        """Seconds until the waiting messages make a batch (0: now); None: none wait."""
        now = self.clock()
        with self._lock:
            if not self._queue:
                return None
            if len(self._queue) >= self.m.batch_max:
                return 0.0
            oldest, last = self._queue[0].at, self._last_at
        due = min(oldest + self.m.batch_seconds, last + self.m.quiet_seconds)
        return max(0.0, due - now)

    def drain(self, agent: Agent) -> int:
        """Score the waiting messages if they make a batch (one transaction), then
        acknowledge them; publish the agent's health when it is due. Returns how many
        messages were scored."""
        self._health(agent)
        due = self.due_in()
        if agent.active is None or due is None or due > 0:
            return 0  # without a model, messages wait (the broker holds the rest)
        with self._lock:
            taken, self._queue = self._queue[:DRAIN_MAX], self._queue[DRAIN_MAX:]
        started = time.perf_counter()
        try:
            self._score(agent, taken)
        except BaseException:
            with self._lock:  # not stored: they go again, first, at the next step
                self._queue = taken + self._queue
            raise
        done = self.clock()
        self.batch_ms.append((time.perf_counter() - started) * 1000)
        self.batches += 1
        self.latency_ms.extend((done - r.at) * 1000 for r in taken)
        with self._lock:
            generation = self.generation
        for r in taken:
            if r.qos > 0 and r.generation == generation:
                # Acknowledged on the connection it came on; one that came before a
                # reconnect is delivered again, and skipped then as a replay.
                self.client.ack(r.mid, r.qos)
        return len(taken)

    def _score(self, agent: Agent, taken: list[Received]) -> None:
        assert agent.active is not None
        messages = [Message(r.message.topic, r.message.payload, i) for i, r in enumerate(taken)]
        spec, limit = agent.active.spec, self.m.max_payload_bytes
        parsed = parse_messages(messages, spec, self.m.payload, limit)
        if parsed.set_aside:
            self._set_aside(parsed.set_aside)
        agent.accept(
            parsed,
            counted={
                "mqtt_messages": len(taken),
                "mqtt_set_aside": len({s.line for s in parsed.set_aside}),
                "mqtt_redelivered": sum(r.dup for r in taken),
            },
        )

    def _set_aside(self, items: list[SetAside]) -> None:
        if self.rejected.exists() and self.rejected.stat().st_size > REJECTED_MAX_BYTES:
            self.rejected.replace(self.rejected.with_name("rejected.1.jsonl"))
        with self.rejected.open("a") as f:
            for s in items:
                f.write(json.dumps({"reason": s.reason, "message": s.text, "at": time.time()}))
                f.write("\n")

    def on_batch(self, batch: Batch) -> None:
        """A stored batch: publish its alarms and pump state (a listener of the agent)."""
        for topic, body in publications(
            batch, self.known, self.clock(), self.m.state_interval_seconds
        ):
            self.publish(topic, body)

    def _health(self, agent: Agent) -> None:
        if self.clock() < self.next_health:
            return
        self.next_health = self.clock() + agent.cfg.heartbeat_seconds
        self.publish("health", agent.health() | {"mqtt": self.stats()})

    def stats(self) -> dict[str, Any]:
        """Percentiles of the latest latencies (milliseconds): a message's arrival to
        its commit (batching included), and scoring one batch."""

        def pct(values: deque[float]) -> dict[str, float | None]:
            ordered = sorted(values)
            if not ordered:
                return {"p50": None, "p99": None}
            at = [ordered[min(len(ordered) - 1, int(q * len(ordered)))] for q in (0.5, 0.99)]
            return {"p50": round(at[0], 2), "p99": round(at[1], 2)}

        return {
            "connected": self.connected.is_set(),
            "reading_to_stored_ms": pct(self.latency_ms),
            "batch_ms": pct(self.batch_ms),
            "batches": self.batches,
        }

    def publish(self, topic: str, body: dict[str, Any]) -> None:
        text = json.dumps(body, separators=(",", ":"), default=str)
        self.client.publish(f"{self.prefix}/{topic}", text, qos=1, retain=True)

    def close(self, timeout: float = 2.0) -> None:
        """Say ``offline``, wait a little for what is being published, disconnect."""
        if self.connected.is_set():
            info = self.client.publish(f"{self.prefix}/status", "offline", qos=1, retain=True)
            # The link may go while closing: the broker's will says offline then.
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout)
        self.client.disconnect()
        self.client.loop_stop()


def rejected_lines(state_dir: Path) -> list[dict[str, Any]]:
    """What was set aside from MQTT, oldest first (the current file only)."""
    path = state_dir / "mqtt" / "rejected.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
