"""The scoring service through its front door for benchmarks and tests: an untrained model
registered in a fresh workspace, Serve started on it, clients that count every answer
(and every request left unanswered), the replicas' processes, and the prediction log's
rows.

Clients speak HTTP/1.1 on kept-alive connections with requests serialised once, so the
load costs this process a few microseconds a request. Each loop is bounded in time and
in count.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.serve_cpu import descendants

CLASS = "esp"
WINDOW = 24
TIMEOUT = 30.0  # seconds a client waits for an answer before it counts it unanswered
REPLICA_TITLE = b"ray::ServeReplica:pumpfleet:PumpScorer"


def esp_spec() -> Any:
    """The feature spec the serving benchmarks score: the esp channels, 24 steps."""
    from pumpfleet.features import FeatureSpec
    from pumpfleet.schema import CLASS_CHANNELS

    channels = [str(c) for c in CLASS_CHANNELS[CLASS]]
    return FeatureSpec(
        pump_class=CLASS, channels=channels, window=WINDOW, stride=4, interval_seconds=3600,
        rul_cap_hours=168, horizon_hours=48, mean=[50.0] * len(channels),
        std=[10.0] * len(channels),
    )  # fmt: skip


def cnn(spec: Any) -> tuple[Any, bytes]:
    """An untrained CNN of the default size for ``spec`` (seeded) and its ONNX."""
    import torch

    from pumpfleet import onnx_io
    from pumpfleet.models import ModelConfig, build_model

    torch.manual_seed(0)
    model = build_model(spec.n_channels, ModelConfig()).eval()
    return model, onnx_io.to_onnx(model, WINDOW, spec.n_channels)


def plain_app(model_dir: Path, port: int) -> subprocess.Popen[bytes]:
    """The baseline: ``benchmarks/plain_app.py`` under uvicorn with 2 workers on ``port``,
    serving the ``model.onnx`` and ``feature_spec.json`` in ``model_dir``; in a session
    of its own (stop it with ``os.killpg``)."""
    return subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "benchmarks.plain_app:app", "--workers", "2",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
         "--no-access-log"],
        env={**os.environ, "PLAIN_MODEL_DIR": str(model_dir)},
        start_new_session=True,
    )  # fmt: skip


def register_models(settings: Any) -> Any:
    """An untrained CNN of the default size on the esp channels, registered twice
    (champion and challenger: A/B routing sends pumps to both); its feature spec and
    ONNX bytes."""
    from pumpfleet.models import ModelConfig
    from pumpfleet.registry import CHALLENGER, CHAMPION, Registry, model_name

    spec = esp_spec()
    model, onnx = cnn(spec)
    reg = Registry(settings.tracking_uri, settings.artifact_root)
    run = reg.start_run("pumpfleet-bench", "front-door")
    uri = reg.log_model(run, onnx, spec, model.state_dict(), ModelConfig().model_dump())
    reg.end_run(run)
    name = model_name(CLASS)
    reg.set_alias(name, CHAMPION, reg.register(uri, name))
    reg.set_alias(name, CHALLENGER, reg.register(uri, name))
    return spec, onnx


def bodies(spec: Any, n: int = 256, seed: int = 1) -> list[dict[str, Any]]:
    """``n`` valid single-window requests, readings in the esp channels' ranges."""
    rng = np.random.default_rng(seed)
    return [
        {
            "pump_id": f"{CLASS}-{i:05d}",
            "pump_class": CLASS,
            "readings": {c: list(rng.normal(50, 10, WINDOW).round(3)) for c in spec.inputs},
        }
        for i in range(n)
    ]


def arrow_batch(spec: Any, n: int = 1000) -> bytes:
    """A batch of ``n`` windows as an Arrow IPC stream (pump id, class, flat window)."""
    import pyarrow as pa

    from pumpfleet.ingest_block import to_ipc

    rng = np.random.default_rng(2)
    windows = rng.normal(50, 10, (n, WINDOW * len(spec.inputs))).astype(np.float64)
    table = pa.table(
        {
            "pump_id": [f"{CLASS}-{i:05d}" for i in range(n)],
            "pump_class": [CLASS] * n,
            "window": pa.array(list(windows), type=pa.list_(pa.float64())),
        }
    )
    return to_ipc(table)


def raw(
    host: str, path: str, body: bytes, headers: dict[str, str], ctype: str = "application/json"
) -> bytes:
    """A whole HTTP/1.1 POST, serialised once."""
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    head = (
        f"POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: {ctype}\r\n{extra}"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


@dataclass
class Service:
    """The scoring service on a workspace of its own, reached through its front door."""

    url: str
    port: int
    key: str
    admin: str
    settings: Any
    spec: Any
    onnx: bytes
    scoring: list[bytes] = field(default_factory=list)  # single-window requests

    @property
    def headers(self) -> dict[str, str]:
        return {"x-api-key": self.key}

    @property
    def admin_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.admin}"}


@contextmanager
def service(home: Path, replicas: int = 2) -> Iterator[Service]:
    """The service on the Ray this process reached (Serve's front door as
    ``use_serve_env`` set it up before Ray started), with ``replicas`` replicas; Serve
    shut down (its HAProxy with it) however it ends."""
    import httpx

    from pumpfleet.ports import free_port
    from pumpfleet.settings import Settings
    from serve_apps import run as serve_run
    from serve_apps.security import Secrets, digest

    settings = Settings(home=home)
    spec, onnx = register_models(settings)
    key, admin = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    keys = Secrets(api_keys=(digest(key),), admin_tokens=(digest(admin),))
    port = free_port()
    try:
        url = serve_run.start(
            settings, port, 0.5, secrets=keys, num_replicas=replicas, staging=False
        )
        svc = Service(url, port, key, admin, settings, spec, onnx)
        host = f"127.0.0.1:{port}"
        svc.scoring = [
            raw(host, "/v1/score", json.dumps(b).encode(), svc.headers) for b in bodies(spec)
        ]
        deadline = time.monotonic() + 180
        while len(replica_pids()) < replicas or not _answers(svc, httpx):
            if time.monotonic() > deadline:
                raise RuntimeError("the scoring service did not come up in 180 s")
            time.sleep(0.5)
        yield svc
    finally:
        serve_run.stop()


def _answers(svc: Service, httpx: Any) -> bool:
    try:
        got = httpx.post(f"{svc.url}/v1/score", json=bodies(svc.spec, 1)[0], headers=svc.headers)
    except httpx.HTTPError:
        return False
    return bool(got.status_code == 200)


# --- clients -------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """One request: when it started and ended (monotonic seconds), its status ("200",
    "503", or what went wrong: "unanswered", "ConnectionResetError", ...), its
    Retry-After header and whom it was (``tag``)."""

    start: float
    end: float
    status: str
    retry_after: str | None = None
    tag: str = ""


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[str, str | None, bytes]:
    """One request on a kept-alive connection: status, Retry-After and body."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0][9:12]
    hdrs = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    if "content-length" in hdrs:
        body = await reader.readexactly(int(hdrs["content-length"]))
    else:  # chunked
        parts = []
        while True:
            size = int((await reader.readline()).strip(), 16)
            parts.append(await reader.readexactly(size + 2))
            if size == 0:
                break
        body = b"".join(p[:-2] for p in parts)
    if hdrs.get("connection", "").lower() == "close":
        writer.close()
    return status, hdrs.get("retry-after"), body


async def clients(
    port: int,
    requests: list[bytes],
    n: int,
    seconds: float,
    max_requests: int = 1_000_000,
    tag: str = "",
    stop_when: asyncio.Task[Any] | None = None,
) -> list[Outcome]:
    """``n`` clients on kept-alive connections, each sending ``requests`` in turn for
    ``seconds`` (and at most ``max_requests`` in all, and until ``stop_when`` is done);
    every request's outcome. A client whose connection fails counts the request and
    reconnects."""
    done: list[Outcome] = []
    end = time.monotonic() + seconds

    def going() -> bool:
        stopped = stop_when is not None and stop_when.done()
        return time.monotonic() < end and len(done) < max_requests and not stopped

    async def one(k: int) -> None:
        conn: Any = None
        i = k
        while going():
            t = time.monotonic()
            retry_after = None
            try:
                if conn is None or conn[1].is_closing():
                    conn = await asyncio.open_connection("127.0.0.1", port)
                got = exchange(conn[0], conn[1], requests[i % len(requests)])
                status, retry_after, _ = await asyncio.wait_for(got, TIMEOUT)
            except TimeoutError:
                status = "unanswered"
            except (OSError, asyncio.IncompleteReadError, ValueError) as e:
                status = type(e).__name__
            if status != "200" and conn is not None:
                conn[1].close()
                conn = None
            done.append(Outcome(t, time.monotonic(), status, retry_after, tag))
            i += n
        if conn is not None:
            conn[1].close()

    await asyncio.gather(*(one(k) for k in range(n)))
    return done


def by_status(outcomes: list[Outcome]) -> dict[str, int]:
    out: dict[str, int] = {}
    for o in outcomes:
        out[o.status] = out.get(o.status, 0) + 1
    return dict(sorted(out.items()))


# --- the replicas ---------------------------------------------------------------------


def replica_pids() -> list[int]:
    """The pumpfleet app's replicas among this process's descendants (the Ray it
    started): never another Ray's on the machine."""
    out = []
    for pid in descendants(os.getpid()):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if title.startswith(REPLICA_TITLE):
            out.append(pid)
    return sorted(out)


def kill_replica() -> int:
    """SIGKILL one replica (the newest); its pid, once it is dead."""
    pid = replica_pids()[-1]
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pid in replica_pids() and time.monotonic() < deadline:
        time.sleep(0.01)
    return pid


def rss_mb(pid: int) -> tuple[float, float]:
    """A process's resident memory now and at its peak (VmHWM), in MB; 0 if gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0, 0.0
    kb = {k: float(v.split()[0]) for k, _, v in (x.partition(":") for x in status.splitlines())
          if k in ("VmRSS", "VmHWM")}  # fmt: skip
    return kb.get("VmRSS", 0.0) / 1024, kb.get("VmHWM", 0.0) / 1024


def logged_rows(settings: Any) -> tuple[int, int]:
    """Rows in the prediction log (as every reader sees it) and as written (a request
    that the front door retried may be in it twice under one request id)."""
    from pumpfleet import storage
    from pumpfleet.predlog import read_log

    root = str(settings.predictions_dir)
    seen = len(read_log(root))
    import pyarrow.parquet as pq

    written = sum(pq.read_metadata(f).num_rows for f in storage.list_files(root, ".parquet"))
    return seen, written


def listening(pids: set[int]) -> list[tuple[str, int, int]]:
    """The TCP sockets ``pids`` listen on, as (address, port, pid), from /proc."""
    import ipaddress

    where: dict[str, tuple[str, int]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if cols[3] != "0A":  # LISTEN
                continue
            addr, port = cols[1].split(":")
            raw_ip = bytes.fromhex(addr)
            # /proc writes each 32-bit word of the address in host (little-endian) order
            words = b"".join(raw_ip[i : i + 4][::-1] for i in range(0, len(raw_ip), 4))
            where[cols[9]] = (str(ipaddress.ip_address(words)), int(port, 16))
    out = []
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in where:
                out.append((*where[target[8:-1]], pid))
    return sorted(out)


def haproxy_pids() -> list[int]:
    """HAProxy processes among this process's descendants (Serve's, of the Ray it
    started)."""
    out = []
    for pid in descendants(os.getpid()):
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            continue
        if os.path.basename(exe) == "haproxy":
            out.append(pid)
    return sorted(out)
