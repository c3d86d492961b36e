"""The batch arms of ``benchmarks.serve_load``: batches of 1,000 windows posted to
``/v1/score/batch`` from one client on a few kept-alive connections, each request
serialised once; windows per second and the CPU a batch cost the servers (every server
process, and Serve's replicas alone), counted until the replicas are idle again so that
the work a batch leaves queued (its rows into the fleet state) is its own."""

from __future__ import annotations

import asyncio
import os
import time

from benchmarks.serve_cpu import CpuMeter
from benchmarks.serve_harness import exchange, raw
from serve_apps.schemas import ARROW_STREAM as ARROW

BATCH = 1000


def batch_rate(
    url: str,
    headers: dict[str, str],
    body: bytes,
    ctype: str,
    reps: int,
    connections: int,
    cpu: tuple[int, bool],
) -> tuple[float, dict[str, float | None]]:
    """``reps`` batches posted to ``/v1/score/batch`` (answers asked for in ``ctype``)
    over ``connections`` kept-alive connections at once, each sending its next batch as
    its last is answered, with each request serialised once (as :func:`_load` does);
    windows per second and the CPU ms a batch cost the servers under ``cpu`` (root pid,
    Serve or not: ``cpu_us`` every server process, ``replica_cpu_us`` Serve's replicas
    alone, in ms); for Serve, counted until its replicas are idle again, so the rows the
    batches left queued for the fleet state count). Each connection sends one batch
    first, untimed (warm-up)."""
    host, port = url.split("//", 1)[1].split(":")
    request = raw(f"{host}:{port}", "/v1/score/batch", body, {**headers, "accept": ctype}, ctype)

    async def run() -> tuple[float, dict[str, float | None]]:
        conns = [await asyncio.open_connection(host, int(port)) for _ in range(connections)]
        left = reps

        async def send(k: int) -> None:
            """A batch on connection ``k``, reopened where the server closed it (an
            answer with ``connection: close``, or a kept-alive connection it dropped
            before answering: sent once more on a new one)."""
            for again in (False, True):
                if conns[k][1].is_closing():
                    conns[k] = await asyncio.open_connection(host, int(port))
                try:
                    status, _, _ = await asyncio.wait_for(exchange(*conns[k], request), 120)
                except asyncio.IncompleteReadError as e:
                    if e.partial or again:
                        raise
                    conns[k][1].close()
                    continue
                if status != "200":
                    raise RuntimeError(f"a batch to {url} was answered {status}")
                return

        async def one(k: int) -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await send(k)

        try:
            await asyncio.gather(*(send(k) for k in range(connections)))  # warm
            meter = CpuMeter(*cpu)
            t = time.perf_counter()
            await asyncio.gather(*(one(k) for k in range(connections)))
            elapsed = time.perf_counter() - t
            if cpu[1]:  # what the batches left running (the fleet feed) is theirs too
                _settle(cpu[0])
        finally:
            for _, writer in conns:
                writer.close()
        used = meter.per_request_us(reps)
        cpu_ms = {k: None if v is None else v / 1000 for k, v in used.items()}
        return BATCH * reps / elapsed, cpu_ms

    return asyncio.run(run())


def serve_batches(
    url: str, headers: dict[str, str], json_body: bytes, arrow_body: bytes, batches: int,
    connections: int,
) -> dict[str, float | None]:  # fmt: skip
    """The JSON and Arrow batch arms through Serve: first batches enough for the fleet
    state to settle (the untrained model's risky pumps open their alerts on their first
    windows), then two rounds, JSON before Arrow and Arrow before JSON, half the batches
    each (one arm after the other, whichever ran first was 1.3 to 2 times faster);
    windows/s and CPU ms a batch (every server process, and the replicas alone) over
    both rounds."""
    kinds = {"json": (json_body, "application/json"), "arrow": (arrow_body, ARROW)}
    me = os.getpid()  # Ray's processes and HAProxy are this one's descendants
    batch_rate(url, headers, arrow_body, ARROW, 3 * connections, connections, (me, True))
    seconds = dict.fromkeys(kinds, 0.0)
    cpu: dict[str, dict[str, float | None]] = {k: {} for k in kinds}  # summed ms
    reps = max(1, batches // 2)
    for order in (("json", "arrow"), ("arrow", "json")):
        for kind in order:
            body, ctype = kinds[kind]
            wps, ms = batch_rate(url, headers, body, ctype, reps, connections, (me, True))
            seconds[kind] += reps * BATCH / wps
            for key, v in ms.items():
                total = cpu[kind].get(key, 0.0)
                cpu[kind][key] = None if total is None or v is None else total + v * reps
    out: dict[str, float | None] = {}
    for kind in kinds:
        mean = {k: None if v is None else v / (2 * reps) for k, v in cpu[kind].items()}
        out |= {
            kind: 2 * reps * BATCH / seconds[kind],
            f"{kind}_cpu_ms": mean.get("cpu_us"),
            f"{kind}_replica_cpu_ms": mean.get("replica_cpu_us"),
        }
    return out


def _settle(root: int, limit_s: float = 30.0) -> None:
    """Wait (at most ``limit_s``) until Serve's replicas under ``root`` use under a tenth
    of a core: what a batch arm left running (its rows into the fleet state, the log's
    flushes) is not charged to the next arm."""
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        meter = CpuMeter(root, True)
        time.sleep(0.5)
        used = meter.per_request_us(1)["replica_cpu_us"]
        if used is None or used < 50_000:  # µs of CPU in 0.5 s
            return
