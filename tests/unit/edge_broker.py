"""A real Mosquitto broker for the edge tests: started by the test on 127.0.0.1 with a
config file of its own (anonymous clients, which only a test allows; persistence in the
test's folder, so a restart keeps sessions), stopped by its PID.

Without the ``mosquitto`` binary a test skips, saying how to install it, except in CI
(``CI`` set), where it fails: CI installs it (``make system-deps``)."""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pumpfleet.ports import free_port

INSTALL = "the mosquitto broker is not installed (make system-deps, or apt-get install mosquitto)"


def mosquitto_binary() -> str:
    """The broker's path; skips the test (fails it in CI) where there is none."""
    found = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(p, os.X_OK)),
        None,
    )
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"{INSTALL}; CI must have it")
        pytest.skip(INSTALL)
    return found


class Broker:
    """One mosquitto process; :meth:`restart` keeps its port and its persisted sessions."""

    def __init__(self, folder: Path) -> None:
        self.binary = mosquitto_binary()
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.config = folder / "mosquitto.conf"
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",  # tests only
            "persistence true",
            # Messages held for a client beyond the 20 in flight: mosquitto's default of
            # 1,000 drops the rest of a burst (its log says "Outgoing messages are being
            # dropped"); a site sizes it to its readings per second times the longest
            # time the agent may be away (docs/edge-field.md).
            "max_queued_messages 100000",
            f"persistence_location {folder}/",
            f"log_dest file {folder / 'mosquitto.log'}",
            # When started as root it would switch to the mosquitto user, who cannot
            # write the test's folder: stay who we are.
            f"user {getpass.getuser()}",
        ]
        self.config.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = (self.folder / "mosquitto.log").read_text()[-2000:]
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: {log}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port} in 15 s")

    def stop(self) -> None:
        """SIGTERM to its PID (it saves its sessions), and wait."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=15)
        self.proc = None

    def restart(self, down_seconds: float = 0.0) -> None:
        self.stop()
        time.sleep(down_seconds)
        self.start()


def client(port: int, client_id: str, clean: bool = True) -> Any:
    """A connected paho client on the broker (its network loop in a thread)."""
    import paho.mqtt.client as paho

    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean)
    c.reconnect_delay_set(min_delay=1, max_delay=2)
    c.max_queued_messages_set(0)  # unbounded: a test's burst waits for the broker whole
    c.max_inflight_messages_set(100)
    connected = threading.Event()
    c.on_connect = lambda *a: connected.set()
    # The ids of the QoS 1 messages the broker acknowledged (resends included).
    c.acked = set()
    c.on_publish = lambda _c, _u, mid, *a: c.acked.add(mid)
    c.connect("127.0.0.1", port, keepalive=30)
    c.loop_start()
    assert connected.wait(10), "the test's client did not connect"
    return c


def retained(port: int, pattern: str, settle: float = 1.0) -> dict[str, Any]:
    """Every retained message under ``pattern`` now: topic → payload (JSON decoded
    where it is JSON)."""
    got: dict[str, Any] = {}

    def on_message(_c: Any, _u: Any, msg: Any) -> None:
        if msg.retain:
            text = msg.payload.decode()
            try:
                got[msg.topic] = json.loads(text)
            except ValueError:
                got[msg.topic] = text

    c = client(port, f"observer-{time.monotonic_ns()}")
    c.on_message = on_message
    c.subscribe(pattern, qos=1)
    time.sleep(settle)
    c.disconnect()
    c.loop_stop()
    return got


def delivered(gateway: Any, infos: list[Any]) -> bool:
    """Whether the broker acknowledged every message of ``infos`` (``publish`` answers)."""
    return {i.mid for i in infos} <= gateway.acked


class Recorder:
    """Every message published under a topic pattern from now on, in order."""

    def __init__(self, port: int, pattern: str) -> None:
        self.messages: list[tuple[str, Any]] = []
        self.client = client(port, f"recorder-{time.monotonic_ns()}")
        self.client.on_message = self._on_message
        self.client.subscribe(pattern, qos=1)

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        if not msg.retain:  # what was sent while recording, not what was kept before
            self.messages.append((msg.topic, json.loads(msg.payload)))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
