"""A soak of the scoring service through its front door, for a bounded time: valid load
with no faults first (the baseline), then the same valid load while bad inputs, slow
clients, a promotion, a split change and a replica kill come at it, then a short burst
of more clients than the replicas take (issue 16).

Prints requests by status per kind of traffic, the 5xx (must be 0), the requests left
unanswered within 30 s (0), each replica's peak resident memory against ``--rss-bound-mb``,
the answered requests against the rows in the prediction log (equal), and whether the
service answers a valid request afterwards; last, one line of ``key=value``.

    python -m benchmarks.soak [--seconds 60] [--clients 16] [--overload 300]

Loopback only, on a Ray of its own in a temp workspace; every loop is bounded in time
and in count. About 2 minutes on 2 cores with the defaults (start-up included).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import serve_harness as h
from pumpfleet.tables import format_table

BATCH = 20  # windows in each valid JSON batch
OVERLOAD_S = 5.0
ARROW = "application/vnd.apache.arrow.stream"


def bad_requests(svc: h.Service) -> dict[str, list[bytes]]:
    """Requests the service must refuse with a 4xx, by kind, each serialised once."""
    host = f"127.0.0.1:{svc.port}"
    good = h.bodies(svc.spec, 1)[0]
    key = svc.headers
    channel = next(iter(good["readings"]))

    def score(body: Any, headers: dict[str, str] = key, **kw: Any) -> bytes:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return h.raw(host, "/v1/score", data, headers, **kw)

    def readings(value: Any) -> dict[str, Any]:
        return {**good, "readings": {**good["readings"], channel: [value] * 24}}

    text = json.dumps(good).replace("50.", "NaN, 50.", 1).encode()  # a bare NaN in JSON
    return {
        "no or wrong key": [
            score(good, {}),
            score(good, {"x-api-key": "not-a-key-0123456789"}),
            h.raw(host, "/v1/admin/reload", b"", key),  # a scoring key on an admin route
        ],
        "bad types and values": [
            score(readings("12.5")),
            score(readings(True)),
            score(readings(-1e6)),
            score(text),
            score({**good, "priority": 1}),
            score({**good, "pump_class": "../../etc"}),
            score(b"{"),
        ],
        "wrong content type": [score(good, ctype="text/plain")],
        "oversize": [
            score(b" " * (2 * 2**20)),  # past a single window's limit
            # a 10^12-byte body declared: refused at the door, nothing sent after the head
            (
                f"POST /v1/score/batch HTTP/1.1\r\nhost: {host}\r\nx-api-key: {svc.key}\r\n"
                f"content-type: {ARROW}\r\ncontent-length: {10**12}\r\n\r\n"
            ).encode(),
        ],
        "compressed bomb": [
            h.raw(host, "/v1/score/batch", _arrow_bomb(), key, ctype=ARROW),
        ],
    }


def _arrow_bomb(rows: int = 9000, width: int = 14000) -> bytes:
    """An Arrow IPC stream, zstd-compressed, declaring ``rows`` windows of ``width`` zero
    float32s (about 500 MB decoded, tens of kB sent); built from one repeated batch."""
    import pyarrow as pa

    per = 100
    zeros = pa.array([np.zeros(width, np.float32)] * per, type=pa.list_(pa.float32()))
    batch = pa.record_batch(
        {
            "pump_id": pa.array([f"esp-{i:05d}" for i in range(per)]),
            "pump_class": pa.array(["esp"] * per),
            "window": zeros,
        }
    )
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression="zstd")
    with pa.ipc.new_stream(sink, batch.schema, options=options) as w:
        for _ in range(rows // per):
            w.write_batch(batch)
    return bytes(sink.getvalue().to_pybytes())


async def slow_clients(port: int, n: int, seconds: float) -> list[h.Outcome]:
    """``n`` clients that send a request head a line a second and never finish it
    (slowloris), and one that sends a body a byte a second: each one's answer."""
    done: list[h.Outcome] = []

    async def one(k: int) -> None:
        t = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = "POST /v1/score HTTP/1.1\r\nhost: pumpfleet\r\n"
        if k == 0:
            head += "content-type: application/json\r\ncontent-length: 4000\r\n\r\n"
        writer.write(head.encode())
        status = "unanswered"
        while time.monotonic() - t < seconds:
            try:
                got = await asyncio.wait_for(reader.read(64), 1.0)
            except TimeoutError:
                writer.write(b" " if k == 0 else b"x-more: 1\r\n")
                continue
            status = got[9:12].decode() if got.startswith(b"HTTP/1.1") else "closed"
            break
        writer.close()
        done.append(h.Outcome(t, time.monotonic(), status, tag="slow client"))

    await asyncio.gather(*(one(k) for k in range(n)))
    return done


def _valid(svc: h.Service) -> tuple[list[bytes], list[bytes]]:
    """Single-window requests and JSON batches of BATCH valid windows."""
    host = f"127.0.0.1:{svc.port}"
    batches = [
        h.raw(host, "/v1/score/batch", json.dumps({"items": h.bodies(svc.spec, BATCH, s)}).encode(),
              svc.headers)
        for s in range(8)
    ]  # fmt: skip
    return svc.scoring, batches


class Memory:
    """Each replica's peak resident memory, sampled twice a second (a replica killed
    keeps the peak it had)."""

    def __init__(self) -> None:
        self.peak: dict[int, float] = {}

    async def watch(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            for pid in h.replica_pids():
                _, hwm = h.rss_mb(pid)
                self.peak[pid] = max(self.peak.get(pid, 0.0), hwm)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)


async def _events(svc: h.Service, seconds: float, log: list[str]) -> None:
    """A promotion, a split change and a replica kill, spread over the soak."""
    import httpx

    from pumpfleet.registry import CHALLENGER, CHAMPION, Registry, model_name

    reg = Registry(svc.settings.tracking_uri, svc.settings.artifact_root)
    name = model_name(h.CLASS)
    async with httpx.AsyncClient(base_url=svc.url, timeout=30) as c:
        await asyncio.sleep(seconds * 0.2)
        champ, chall = reg.version_by_alias(name, CHAMPION), reg.version_by_alias(name, CHALLENGER)
        assert champ and chall
        reg.set_alias(name, CHAMPION, chall)
        reg.set_alias(name, CHALLENGER, champ)
        r = await _admin(c, "/v1/admin/reload", svc, None)
        log.append(f"promoted v{chall} (reload {r})")
        await asyncio.sleep(seconds * 0.2)
        r = await _admin(c, "/v1/admin/split", svc, {"challenger_weight": 0.8})
        log.append(f"split 0.8 ({r})")
        await asyncio.sleep(seconds * 0.2)
        pid = h.kill_replica()
        t = time.monotonic()
        while len(h.replica_pids()) < 2 and time.monotonic() - t < 60:
            await asyncio.sleep(0.25)
        log.append(f"killed replica {pid}, replaced in {time.monotonic() - t:.1f} s")


async def _admin(c: Any, path: str, svc: h.Service, body: Any) -> int:
    """An admin call as an operator makes it: again after Retry-After on a 503."""
    for _ in range(10):
        r = await c.post(path, json=body, headers=svc.admin_headers)
        if r.status_code != 503:
            return int(r.status_code)
        await asyncio.sleep(float(r.headers.get("retry-after", 1)))
    return 503


async def _soak(svc: h.Service, seconds: float, clients: int, memory: Memory) -> dict[str, Any]:
    singles, batches = _valid(svc)
    bad = bad_requests(svc)
    events: list[str] = []
    stop = asyncio.Event()
    watcher = asyncio.create_task(memory.watch(stop))
    started = time.monotonic()
    runs = [
        h.clients(svc.port, singles, clients, seconds, tag="valid"),
        h.clients(svc.port, batches, 2, seconds, max_requests=2_000, tag="valid batch"),
        slow_clients(svc.port, 40, seconds),
        _events(svc, seconds, events),
    ]
    for kind, requests in bad.items():
        # bounded: at most one of a kind in flight, 400 of it in all (bombs: 20)
        cap = 20 if kind == "compressed bomb" else 400
        runs.append(h.clients(svc.port, requests, 1, seconds, max_requests=cap, tag=kind))
    results = await asyncio.gather(*runs)
    stop.set()
    await watcher
    outcomes = [o for r in results if isinstance(r, list) for o in r]
    return {"outcomes": outcomes, "events": events, "seconds": time.monotonic() - started}


def _row(name: str, outs: list[h.Outcome], seconds: float) -> list[Any]:
    st = h.by_status(outs)
    ok = sorted(o.end - o.start for o in outs if o.status == "200")
    c4 = sum(v for k, v in st.items() if k.startswith("4"))
    c5 = sum(v for k, v in st.items() if k.startswith("5") and k != "503")
    other = {k: v for k, v in st.items() if not k[0].isdigit()}
    p99 = f"{ok[int(0.99 * (len(ok) - 1))] * 1000:.1f}" if ok else "-"
    unanswered = other.pop("unanswered", 0)
    rate = f"{len(ok) / seconds:,.0f}"
    row = [name, len(outs), st.get("200", 0), c4, st.get("503", 0), c5, unanswered]
    return [*row, sum(other.values()), rate, p99]


def run(seconds: float, clients: int, rss_bound_mb: float, overload: int) -> dict[str, Any]:
    import httpx
    import ray

    from pumpfleet.settings import Settings
    from ray_jobs._ray import init_ray
    from serve_apps import run as serve_run

    home = Path(tempfile.mkdtemp(prefix="pumpfleet-soak-"))
    serve_run.use_serve_env(local=True, home=home)
    try:
        init_ray(Settings(home=home))
        memory = Memory()
        with h.service(home, 2) as svc:
            base = asyncio.run(h.clients(svc.port, svc.scoring, clients, seconds / 4, tag="valid"))
            soak = asyncio.run(_soak(svc, seconds, clients, memory))
            # last, more clients than the replicas take (2 x (64 in progress + 32 queued)):
            # the rest must be answered 503 with Retry-After at once
            burst = asyncio.run(h.clients(svc.port, svc.scoring, overload, OVERLOAD_S))
            after = httpx.post(
                f"{svc.url}/v1/score", json=h.bodies(svc.spec, 1)[0], headers=svc.headers
            ).status_code
        logged, written = h.logged_rows(svc.settings)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        shutil.rmtree(home, ignore_errors=True)
    outs = soak["outcomes"]
    answered = (
        1  # the window service() scored to see that it serves
        + sum(o.status == "200" for o in base)
        + sum(o.status == "200" for o in outs if o.tag == "valid")
        + sum(o.status == "200" for o in burst)
        + BATCH * sum(o.status == "200" for o in outs if o.tag == "valid batch")
        + (after == 200)
    )
    return {
        "base": base,
        "overload": burst,
        "base_seconds": seconds / 4,
        "soak": soak,
        "after": after,
        "answered": answered,
        "logged": logged,
        "written": written,
        "peak_rss_mb": memory.peak,
        "rss_bound_mb": rss_bound_mb,
        "overload_clients": overload,
        "load": os.getloadavg(),
    }


def report(r: dict[str, Any]) -> str:
    soak, s = r["soak"], r["soak"]["seconds"]
    outs = soak["outcomes"]
    kinds = dict.fromkeys(o.tag for o in outs)
    head = ["traffic", "requests", "200", "4xx", "503", "5xx", "unanswered", "errors",
            "200/s", "p99 ms"]  # fmt: skip
    rows = [_row("baseline: valid, no faults", r["base"], r["base_seconds"])]
    rows += [_row(f"soak: {k}", [o for o in outs if o.tag == k], s) for k in kinds]
    burst = r["overload"]
    rows.append(_row(f"overload: {r['overload_clients']} clients, valid", burst, OVERLOAD_S))
    everything = r["base"] + outs + burst
    shed = [o for o in burst if o.status == "503"]
    # any 5xx, a 503 too, except the overload burst's 503s: those are its designed answer
    c5 = sum(o.status.startswith("5") for o in everything) - len(shed)
    unanswered = sum(o.status == "unanswered" for o in everything)
    odd = [o for o in everything if not o.status[0].isdigit() and o.status != "unanswered"]
    slow = [o for o in outs if o.tag == "slow client"]
    peak = max(r["peak_rss_mb"].values(), default=0.0)
    mem = ", ".join(f"{pid}: {mb:.0f}" for pid, mb in sorted(r["peak_rss_mb"].items()))
    lines = [
        format_table(head, rows),
        "",
        f"events: {'; '.join(soak['events'])}",
        f"answers that were not HTTP, by kind: {h.by_status(odd) or 'none'}",
        f"overload: {len(shed)} of {len(burst)} requests shed (503), "
        f"Retry-After {sorted({o.retry_after for o in shed}, key=str) or '-'}, "
        f"the slowest 503 in {max((o.end - o.start for o in shed), default=0) * 1000:.0f} ms",
        f"slow clients cut off (408): {sum(o.status == '408' for o in slow)} of {len(slow)}, "
        f"the last after {max((o.end - o.start for o in slow), default=0):.1f} s",
        f"peak RSS per replica (MB; bound {r['rss_bound_mb']:.0f}): {mem}",
        f"answered 200 (scored windows): {r['answered']}; rows in the prediction log: "
        f"{r['logged']} ({r['written']} written)",
        f"a valid request afterwards: {r['after']}",
        f"load average (1, 5, 15 min): {' '.join(f'{x:.2f}' for x in r['load'])}",
        f"status_5xx={c5} unanswered={unanswered} shed_503={len(shed)} peak_rss_mb={peak:.0f} "
        f"rss_within_bound={int(peak <= r['rss_bound_mb'])} logged={r['logged']} "
        f"answered={r['answered']} after={r['after']}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0, help="of faults (baseline: 1/4)")
    parser.add_argument("--clients", type=int, default=16, help="valid single-window clients")
    parser.add_argument("--rss-bound-mb", type=float, default=1000.0)
    parser.add_argument("--overload", type=int, default=300, help="clients of the last burst")
    args = parser.parse_args(argv)
    print(report(run(args.seconds, args.clients, args.rss_bound_mb, args.overload)))


if __name__ == "__main__":
    main()
