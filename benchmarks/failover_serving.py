"""The serving scenario of benchmarks/failover.py: a worker node holding one of the
scoring app's two replicas dies while clients keep scoring single windows."""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from typing import Any

import numpy as np

from benchmarks.failover_cluster import _since, _workspace, actors, disturbed, local_cluster

# --- serving ------------------------------------------------------------------------

CLASS = "esp"
WINDOW = 24
RETRY_AFTER_S = 0.2


def _register_model(settings: Any) -> Any:
    """An untrained CNN registered as the esp champion (failover does not need a good
    model); its feature spec."""
    import torch

    from pumpfleet import onnx_io
    from pumpfleet.features import FeatureSpec
    from pumpfleet.models import ModelConfig, build_model
    from pumpfleet.registry import CHAMPION, Registry, model_name
    from pumpfleet.schema import CLASS_CHANNELS

    torch.manual_seed(0)
    channels = list(CLASS_CHANNELS[CLASS])
    spec = FeatureSpec(
        pump_class=CLASS, channels=channels, window=WINDOW, stride=4, interval_seconds=3600,
        rul_cap_hours=168, horizon_hours=48, mean=[50.0] * len(channels),
        std=[10.0] * len(channels),
    )  # fmt: skip
    model = build_model(spec.n_channels, ModelConfig()).eval()
    reg = Registry(settings.tracking_uri, settings.artifact_root)
    run = reg.start_run("pumpfleet-bench", "failover")
    onnx = onnx_io.to_onnx(model, WINDOW, spec.n_channels)
    uri = reg.log_model(run, onnx, spec, model.state_dict(), ModelConfig().model_dump())
    reg.end_run(run)
    name = model_name(CLASS)
    reg.set_alias(name, CHAMPION, reg.register(uri, name))
    return spec


def _raw_requests(port: int, key: str, spec: Any, n: int = 64) -> list[bytes]:
    """Single-window score requests, each serialised once as a whole HTTP/1.1 request."""
    rng = np.random.default_rng(1)
    out = []
    for i in range(n):
        body = json.dumps(
            {
                "pump_id": f"{CLASS}-{i:05d}",
                "pump_class": CLASS,
                "readings": {c: list(rng.normal(50, 10, WINDOW).round(3)) for c in spec.inputs},
            }
        ).encode()
        head = (
            f"POST /v1/score HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n"
            f"content-type: application/json\r\nx-api-key: {key}\r\n"
            f"content-length: {len(body)}\r\n\r\n"
        )
        out.append(head.encode() + body)
    return out


async def _status(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes) -> str:
    """Sends one request; its status code, with the body if it is not 200."""
    writer.write(raw)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.lower().split(b"\r\n")
    length = next((int(x[15:]) for x in lines if x.startswith(b"content-length:")), 0)
    body = await reader.readexactly(length)
    if b"connection: close" in lines:  # the front door reloaded: a new connection next
        writer.close()
    status = head[9:12].decode()
    return status if status == "200" else f"{status} {body[:200].decode(errors='replace')}"


def load(port: int, raws: list[bytes], clients: int, stop: threading.Event) -> list[Any]:
    """``clients`` clients on kept-alive connections, scoring until ``stop``; every
    request as (start, end, first outcome, outcome after one retry), an outcome being
    "200" or what went wrong. A failed request is retried once on a new connection,
    after ``RETRY_AFTER_S``, as a load balancer or client with a retry policy does."""
    done: list[tuple[float, float, str, str]] = []

    async def client(k: int) -> None:
        conn: Any = None
        i = k
        while not stop.is_set():
            t = time.monotonic()
            outcomes: list[str] = []
            for attempt in range(2):
                if attempt:
                    await asyncio.sleep(RETRY_AFTER_S)
                try:
                    if conn is None or conn[1].is_closing():
                        conn = await asyncio.open_connection("127.0.0.1", port)
                    outcome = await asyncio.wait_for(_status(*conn, raws[i % len(raws)]), 30)
                except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as e:
                    outcome = type(e).__name__
                    if conn is not None:
                        conn[1].close()
                    conn = None
                outcomes.append(outcome)
                if outcome == "200":
                    break
            done.append((t, time.monotonic(), outcomes[0], outcomes[-1]))
            i += clients
        if conn is not None:
            conn[1].close()

    async def main() -> None:
        await asyncio.gather(*(client(k) for k in range(clients)))

    asyncio.run(main())
    return done


def _window(done: list[Any], start: float, end: float) -> dict[str, Any]:
    """Requests in flight at some time in [start, end): how many, failed (at the first
    attempt, as a client without retries sees it, and after one retry), per second and
    p99 ms of those that succeeded."""
    sel = [r for r in done if r[0] < end and r[1] >= start]
    ok = [r[1] - r[0] for r in sel if r[3] == "200"]
    failed = [r for r in sel if r[2] != "200"]
    kinds: dict[str, int] = {}
    for r in failed:
        kind = r[2].split(" ", 1)[0]
        kinds[kind] = kinds.get(kind, 0) + 1
    seconds = max(1e-9, (max((r[1] for r in sel), default=start) - start))
    return {
        "requests": len(sel),
        "errors": len(failed),
        "error_rate": len(failed) / len(sel) if sel else 0.0,
        "errors_after_retry": len(sel) - len(ok),
        "error_kinds": kinds,
        "rps": len(ok) / seconds,
        "p99_ms": float(np.percentile(np.array(ok) * 1000, 99)) if ok else None,
        # when each failed request started, from the start of the window, and why
        "failed": [(round(r[0] - start, 2), r[2]) for r in failed][:50],
    }


def serving(quick: bool) -> dict[str, Any]:
    """The scoring app with two replicas on two workers under single-window load; kill
    the node of one replica."""
    import httpx
    from ray import serve

    from pumpfleet.ports import free_port
    from pumpfleet.simulator import SimulationConfig
    from serve_apps import run as serve_run
    from serve_apps.security import Secrets, digest

    seconds, clients = (6.0, 4) if quick else (20.0, 8)
    key = secrets.token_urlsafe(24)
    with _workspace(SimulationConfig(pumps=1, days=1)) as settings, local_cluster() as lc:
        spec = _register_model(settings)
        port = free_port()
        keys = Secrets(api_keys=(digest(key),), admin_tokens=(digest(secrets.token_hex(8)),))
        url = serve_run.start(settings, port, 0.0, secrets=keys, num_replicas=2, staging=False)
        raws = _raw_requests(port, key, spec)

        def replicas() -> list[dict[str, Any]]:
            return [r for r in actors("ServeReplica") if f"{serve_run.APP_NAME}#" in r["name"]]

        def healthy() -> bool:
            app = serve.status().applications.get(serve_run.APP_NAME)
            states = app.deployments["PumpScorer"].replica_states if app else {}
            on = {r["node_id"] for r in replicas()}
            return states == {"RUNNING": 2} and len(replicas()) == 2 and not on & gone

        gone: set[str] = set()
        deadline = time.monotonic() + 120
        while not healthy() or httpx.get(f"{url}/readyz").status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError("the scoring app did not come up in 120 s")
            time.sleep(0.5)
        nodes = sorted(r["node_id"] for r in replicas())
        spread = len(set(nodes)) == 2

        stop = threading.Event()
        timer = threading.Timer(seconds, stop.set)
        timer.start()
        baseline = load(port, raws, clients, stop)
        base = _window(baseline, baseline[0][0], float("inf"))

        stop = threading.Event()
        started = time.monotonic()

        def victim() -> Any:
            if time.monotonic() - started < seconds / 3:
                return None
            node = lc.worker(replicas()[0]["node_id"])
            gone.add(node.node_id)
            return node

        done, marks = disturbed(
            lc, lambda: load(port, raws, clients, stop), victim, healthy, stop, linger=seconds
        )
        after_nodes = sorted(r["node_id"] for r in replicas())
        # No serve.shutdown(): with a node gone, its controller waits 30 s for replicas
        # that no longer exist; the cluster goes down whole right after.
    killed, back = marks.get("killed", float("inf")), marks.get("recovered", float("inf"))
    return {
        "scenario": "serving",
        "clients": clients,
        "replica_nodes": nodes,
        "replicas_on_two_nodes": spread,
        "replica_nodes_after": after_nodes,
        "killed_node_had_replica": bool(gone & set(nodes)),
        "baseline": base,
        # Before: finished before the kill; during: in flight at some time from the kill
        # to two healthy replicas again; after: started after that.
        "before": _window([r for r in done if r[1] < killed], marks["started"], killed),
        "during": _window(done, killed, back),
        "after": _window([r for r in done if r[0] >= back], back, float("inf")),
        "recovery_s": _since(marks, "recovered"),  # node killed -> 2 healthy replicas
        "baseline_s": seconds,
        "failure_s": marks["ended"] - marks["started"],
    }


# --- the report ---------------------------------------------------------------------
