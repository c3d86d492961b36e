"""The scoring service under load, against its baselines, in one run on the same model:

- **serve**: the pumpfleet app on Ray Serve (A/B routing on, predictions logged ahead
  of each answer), throughput-optimised mode, ``--replicas`` replicas, measured through
  its front door (Serve's HAProxy ingress on the port ``pumpfleet serve`` prints: the
  address a user and a load balancer call), straight to the replicas' own ports, and
  through Serve's Python proxy (the front door's fallback);
- **fastapi**: the same ONNX model and feature code behind one plain FastAPI app under
  uvicorn with 2 workers, no Ray (``benchmarks/plain_app.py``);
- **in-process**: onnxruntime called from Python, one window at a time (the limit).

Single-window requests at 16 and 64 concurrent clients for a fixed time (throughput,
p50, p99, errors); batches of 1,000 windows as JSON and as Arrow IPC (windows/s and
the servers' CPU a batch), ``--batches`` of them an arm from one client on
``--batch-connections`` kept-alive connections (each sends its next batch when its last
is answered), the FastAPI baseline's the same way (Serve's arms after batches that
settle its fleet state, in two rounds, JSON first then Arrow first); and chaos under
load, through the front door: promote the challenger, change the split and kill a
replica while 16 clients keep scoring (failed requests).

    python -m benchmarks.serve_load [--seconds 10] [--replicas 2] [--batches-only | --door-only]

The load comes from an asyncio client in this process, on the same 2 cores as the
servers: every arm pays for it alike, so read the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.serve_batches import BATCH, batch_rate, serve_batches
from benchmarks.serve_cpu import CpuMeter
from benchmarks.serve_harness import arrow_batch, bodies, plain_app, register_models
from benchmarks.serve_load_report import report

WINDOW = 24
CLASS = "esp"
TIMEOUT = 10.0  # seconds a client waits for an answer before it counts a failure


def _model(home: Path) -> tuple[Any, bytes, Any]:
    """A CNN of the default size on the esp channels, registered twice (champion and
    challenger) in a fresh MLflow under ``home``; its spec, ONNX and the settings."""
    from pumpfleet.settings import Settings

    settings = Settings(home=home)
    spec, onnx = register_models(settings)
    return spec, onnx, settings


async def _request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes) -> int:
    """One HTTP/1.1 request on a kept-alive connection; returns the status code."""
    writer.write(raw)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lines = head.lower().split(b"\r\n")
    length = next((int(x[15:]) for x in lines if x.startswith(b"content-length:")), None)
    if length is not None:
        await reader.readexactly(length)
    else:  # chunked
        while True:
            size = int((await reader.readline()).strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    if b"connection: close" in lines:  # the front door reloaded: a new connection next
        writer.close()
    return status


def _raw_requests(url: str, headers: dict[str, str], bodies: list[dict[str, Any]]) -> list[bytes]:
    """Each body as a complete HTTP/1.1 request, serialised once: the load generator then
    costs a few microseconds a request, so the servers, not the client, are measured."""
    host = url.split("//", 1)[1]
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    out = []
    for b in bodies:
        data = json.dumps(b).encode()
        head = (
            f"POST /v1/score HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
            f"{extra}content-length: {len(data)}\r\n\r\n"
        )
        out.append(head.encode() + data)
    return out


async def _load(
    urls: str | list[str], headers: dict[str, str], bodies: list[dict[str, Any]], clients: int,
    seconds: float,
    during: Callable[[], Awaitable[None]] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """``clients`` concurrent clients, each on its own kept-alive connection, posting
    single windows for ``seconds``. A connection that fails is counted and reopened."""
    urls = [urls] if isinstance(urls, str) else urls
    targets = [(u.split("//", 1)[1].split(":"), _raw_requests(u, headers, bodies)) for u in urls]
    lat: list[float] = []
    errors: dict[str, int] = {}
    end = time.perf_counter() + seconds

    def error(kind: str) -> None:
        errors[kind] = errors.get(kind, 0) + 1

    async def one(k: int) -> None:
        i = k
        (host, port), raws = targets[k % len(targets)]  # clients spread over the targets
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        while time.perf_counter() < end:
            t = time.perf_counter()
            try:
                if conn is None or conn[1].is_closing():
                    conn = await asyncio.open_connection(host, int(port))
                status = await asyncio.wait_for(_request(*conn, raws[i % len(raws)]), TIMEOUT)
                if status == 200:
                    lat.append(time.perf_counter() - t)
                else:
                    error(str(status))
            except (OSError, asyncio.IncompleteReadError, ValueError, TimeoutError) as e:
                error(type(e).__name__)
                if conn is not None:
                    conn[1].close()
                conn = None
            i += clients
        if conn is not None:
            conn[1].close()

    started = time.perf_counter()
    tasks = [asyncio.create_task(one(k)) for k in range(clients)]
    if during is not None:
        await during()
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - started
    ms = np.array(lat) * 1000 if lat else np.array([float("nan")])
    return {
        "rps": len(lat) / elapsed,
        "p50": float(np.percentile(ms, 50)),
        "p99": float(np.percentile(ms, 99)),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "requests": len(lat) + sum(errors.values()),
    }


def _measured(root: int, serve: bool, load: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    """A load run with the CPU each request cost the servers under ``root``
    (:mod:`benchmarks.serve_cpu`)."""
    meter = CpuMeter(root, serve)
    out = asyncio.run(load)
    return out | meter.per_request_us(out["requests"])


def _in_process(spec: Any, onnx: bytes, seconds: float) -> dict[str, Any]:
    from pumpfleet import runtime
    from pumpfleet.features import decode_outputs, window_features

    sess = runtime.session(onnx)
    raw = np.random.default_rng(3).normal(50, 10, (256, WINDOW, len(spec.inputs)))
    lat = []
    end = time.perf_counter() + seconds
    i = 0
    while time.perf_counter() < end:
        t = time.perf_counter()
        decode_outputs(runtime.run(sess, window_features(raw[i % 256][None], spec)), spec)
        lat.append(time.perf_counter() - t)
        i += 1
    ms = np.array(lat) * 1000
    x = window_features(raw[np.arange(BATCH) % 256], spec)
    t = time.perf_counter()
    for _ in range(5):
        runtime.run(sess, x)
    return {
        "rps": len(lat) / sum(lat),
        "p50": float(np.percentile(ms, 50)),
        "p99": float(np.percentile(ms, 99)),
        "errors": 0,
        "batch": 5 * BATCH / (time.perf_counter() - t),
    }


def _wait_http(url: str, proc: subprocess.Popen[bytes] | None = None, s: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server at {url} exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/openapi.json", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"no answer from {url} within {s} s")


def _direct_urls(replicas: int, headers: dict[str, str]) -> list[str]:
    """The replicas' own HTTP ports (direct ingress), found by asking each port of Serve's
    range for /v1/models with this run's key (another app's replica refuses it); [] if
    direct ingress is off."""
    import httpx
    from ray.serve._private import constants

    # (the driver's constants were read before use_serve_env: ask the ports themselves)
    found = []
    low = constants.RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT
    for p in range(low, low + 64):
        try:
            got = httpx.get(f"http://127.0.0.1:{p}/v1/models", headers=headers, timeout=1)
            if got.status_code == 200:
                found.append(f"http://127.0.0.1:{p}")
        except httpx.HTTPError:
            continue
        if len(found) == replicas:
            break
    return found


def _replica_names() -> list[str]:
    import ray

    return sorted(
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if "SERVE_REPLICA" in a["name"] and "pumpfleet#" in a["name"]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serve_load", description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0, help="per load measurement")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument(
        "--batches", type=int, default=200, help="1,000-window batches per arm (two rounds)"
    )
    parser.add_argument(
        "--batch-connections", type=int, default=4, help="connections the batch arms send on"
    )
    only = parser.add_mutually_exclusive_group()
    only.add_argument(
        "--batches-only", action="store_true", help="the batch paths alone: no load, no chaos"
    )
    only.add_argument(
        "--door-only",
        action="store_true",
        help="single windows through the front door and FastAPI alone: no batches, no chaos",
    )
    args = parser.parse_args(argv)
    if args.batches_only:
        args.concurrency = []

    import httpx
    import ray

    from pumpfleet.ports import free_port
    from pumpfleet.registry import CHALLENGER, CHAMPION, Registry, model_name
    from ray_jobs._ray import init_ray
    from serve_apps import run as serve_run
    from serve_apps.security import Secrets, digest

    home = Path(tempfile.mkdtemp(prefix="pumpfleet-serve-load-"))
    serve_run.use_serve_env(home=home)  # as `pumpfleet serve` runs: before Ray starts
    key, admin = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    headers = {"x-api-key": key}
    plain: subprocess.Popen[bytes] | None = None
    try:
        spec, onnx, settings = _model(home)
        singles = bodies(spec)
        json_batch = httpx.Request("POST", "/", json={"items": bodies(spec, BATCH)}).content
        arrow_body = arrow_batch(spec)
        model_dir = home / "plain"
        model_dir.mkdir()
        (model_dir / "model.onnx").write_bytes(onnx)
        (model_dir / "feature_spec.json").write_text(spec.to_json())

        rows: dict[str, dict[str, Any]] = {}
        # (b) plain FastAPI + uvicorn, 2 workers
        port = free_port()
        plain = plain_app(model_dir, port)
        plain_url = f"http://127.0.0.1:{port}"
        _wait_http(plain_url, plain)
        for n in args.concurrency:
            load = _load(plain_url, {}, singles, n, args.seconds)
            rows[f"fastapi@{n}"] = _measured(plain.pid, False, load)
        if not args.door_only:
            wps, cpu = batch_rate(
                plain_url, {}, json_batch, "application/json", args.batches,
                args.batch_connections, (plain.pid, False),
            )  # fmt: skip
            rows["fastapi@batch"] = {"json": wps, "json_cpu_ms": cpu["cpu_us"]}
        os.killpg(plain.pid, signal.SIGTERM)
        plain.wait(30)
        plain = None

        # (a) the pumpfleet app on Ray Serve: through the front door (HAProxy, the address
        # `pumpfleet serve` prints), straight to the replicas' own ports (direct ingress)
        # and through Serve's Python proxy (the door's fallback)
        init_ray(settings)
        secrets_ = Secrets(api_keys=(digest(key),), admin_tokens=(digest(admin),))
        port = free_port()
        url = serve_run.start(
            settings, port, 0.5, secrets=secrets_, num_replicas=args.replicas, staging=False,
        )  # fmt: skip
        _wait_http(url)
        httpx.post(f"{url}/v1/score", json=singles[0], headers=headers).raise_for_status()
        direct = _direct_urls(args.replicas, headers)
        proxy = f"http://127.0.0.1:{os.environ['RAY_SERVE_FALLBACK_PROXY_HTTP_PORT']}"
        for n in args.concurrency:
            me = os.getpid()  # Ray's processes and HAProxy are this one's descendants
            rows[f"door@{n}"] = _measured(me, True, _load(url, headers, singles, n, args.seconds))
            if args.door_only:
                continue
            load = _load(direct or url, headers, singles, n, args.seconds)
            rows[f"serve@{n}"] = _measured(me, True, load)
            rows[f"proxy@{n}"] = _measured(
                me, True, _load(proxy, headers, singles, n, args.seconds)
            )
        if args.door_only:  # no batches, no chaos
            serve_run.stop()
            return report(rows, args.concurrency, door_only=True)
        rows["serve@batch"] = serve_batches(
            url, headers, json_batch, arrow_body, args.batches, args.batch_connections
        )

        # chaos: promote, change the split, kill a replica, while 16 clients score
        reg = Registry(settings.tracking_uri, settings.artifact_root)
        name = model_name(CLASS)
        auth = {"authorization": f"Bearer {admin}"}
        events: list[str] = []

        async def chaos() -> None:
            async with httpx.AsyncClient(base_url=url, timeout=30) as c:
                await asyncio.sleep(args.seconds * 0.2)
                champ, chall = (
                    reg.version_by_alias(name, CHAMPION),
                    reg.version_by_alias(name, CHALLENGER),
                )
                assert champ and chall
                reg.set_alias(name, CHAMPION, chall)
                reg.set_alias(name, CHALLENGER, champ)
                r = await c.post("/v1/admin/reload", headers=auth)
                events.append(f"promote v{chall}: {r.status_code}")
                await asyncio.sleep(args.seconds * 0.2)
                r = await c.post("/v1/admin/split", json={"challenger_weight": 0.8}, headers=auth)
                events.append(f"split 0.8: {r.status_code}")
                await asyncio.sleep(args.seconds * 0.2)
                victims = _replica_names()
                if len(victims) > 1:
                    ray.kill(ray.get_actor(victims[0], namespace="serve"), no_restart=True)
                    events.append(f"killed 1 of {len(victims)} replicas")
                else:
                    events.append(f"{len(victims)} replica: none killed")

        if not args.batches_only:
            rows["serve@chaos"] = asyncio.run(
                _load(url, headers, singles, 16, args.seconds * 1.5, chaos)
            )
            rows["serve@chaos"]["events"] = events
        serve_run.stop()

        # (c) onnxruntime in-process
        rows["in-process"] = _in_process(spec, onnx, args.seconds / 2)
    finally:
        if plain is not None:
            os.killpg(plain.pid, signal.SIGTERM)
            plain.wait(30)
        if ray.is_initialized():
            ray.shutdown()
        shutil.rmtree(home, ignore_errors=True)

    report(rows, args.concurrency)


if __name__ == "__main__":
    main()
