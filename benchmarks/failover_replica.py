"""Replica loss through the front door: 16 clients score single windows through Serve's
HAProxy ingress while one of the two replicas is SIGKILLed, ``--kills`` times (each once
both replicas serve again). Counts the requests that failed, and the answered requests
against the rows in the prediction log once Serve has stopped: equal if no answered
row was lost (the replicas write each row ahead before answering, and the replica that
takes a killed one's place recovers them).

    python -m benchmarks.failover_replica [--kills 5] [--clients 16] [--json]

Loopback only, on a Ray of its own (a fresh local instance in a temp workspace).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import serve_harness as h
from pumpfleet.tables import format_table

SETTLE_S = 3.0  # both replicas serving this long before the next kill


async def _kills(n: int, replicas: int, events: list[dict[str, Any]]) -> None:
    for _ in range(n):
        await asyncio.sleep(SETTLE_S)
        killed_at = time.monotonic()
        pid = h.kill_replica()
        while len(h.replica_pids()) < replicas:
            await asyncio.sleep(0.25)
        events.append({"pid": pid, "at": killed_at, "back_s": time.monotonic() - killed_at})
    await asyncio.sleep(SETTLE_S)


def run(kills: int, clients: int, replicas: int = 2) -> dict[str, Any]:
    """Start the service on a fresh workspace and Ray, kill replicas under load, stop it,
    count. Ray and Serve are shut down however it ends."""
    import ray

    from pumpfleet.settings import Settings
    from ray_jobs._ray import init_ray
    from serve_apps import run as serve_run

    home = Path(tempfile.mkdtemp(prefix="pumpfleet-failover-"))
    serve_run.use_serve_env(local=True, home=home)
    try:
        init_ray(Settings(home=home))
        events: list[dict[str, Any]] = []
        with h.service(home, replicas) as svc:
            seconds = kills * (SETTLE_S + 12) + 5

            async def load() -> list[h.Outcome]:
                stop = asyncio.create_task(_kills(kills, replicas, events))
                done = await h.clients(svc.port, svc.scoring, clients, seconds, stop_when=stop)
                await stop
                return done

            started = time.monotonic()
            done = asyncio.run(load())
            elapsed = time.monotonic() - started
        # Serve stopped: every replica flushed its log, and the killed ones' rows were
        # recovered by those that took their place
        logged, written = h.logged_rows(svc.settings)
        # and the one window service() scored to see that it serves
        answered = sum(o.status == "200" for o in done) + 1
        failed = [o for o in done if o.status != "200"]
        ok = [o.end - o.start for o in done if o.status == "200"]
        windows = [
            (e["at"], e["at"] + e["back_s"]) for e in events
        ]  # in flight while a replica was missing
        during = [o for o in done if any(o.start < b and o.end >= a for a, b in windows)]
        return {
            "kills": len(events),
            "clients": clients,
            "requests": len(done),
            "failed": len(failed),
            "failed_kinds": h.by_status(failed),
            "during_kills": len(during),
            "answered": answered,
            "logged": logged,
            "written": written,
            "rps": len(ok) / elapsed,
            "p99_ms": sorted(ok)[int(0.99 * (len(ok) - 1))] * 1000 if ok else None,
            "back_s": [round(e["back_s"], 1) for e in events],
            "load": os.getloadavg(),
        }
    finally:
        if ray.is_initialized():
            ray.shutdown()
        shutil.rmtree(home, ignore_errors=True)


def report(r: dict[str, Any]) -> str:
    rows = [
        ["requests (16 clients)", r["requests"]],
        ["  in flight while a replica was down", r["during_kills"]],
        ["  failed", f"{r['failed']} {r['failed_kinds'] or ''}".strip()],
        ["answered 200", r["answered"]],
        ["rows in the prediction log", r["logged"]],
        ["  rows written (a retried request twice)", r["written"]],
        ["replica back after (s)", ", ".join(map(str, r["back_s"]))],
        ["req/s, p99 ms", f"{r['rps']:,.0f}, {r['p99_ms']:.1f}"],
        ["load average (1, 5, 15 min)", " ".join(f"{x:.2f}" for x in r["load"])],
    ]
    lost = r["answered"] - r["logged"]
    return "\n".join(
        [
            format_table([f"{r['kills']} replica SIGKILLs", ""], rows),
            f"kills={r['kills']} failed={r['failed']} answered={r['answered']} "
            f"logged={r['logged']} lost={lost} duplicates={r['written'] - r['logged']}",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.failover_replica")
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--json", action="store_true", help="also print the result as JSON")
    args = parser.parse_args(argv)
    result = run(args.kills, args.clients)
    print(report(result))
    if args.json:
        print(json.dumps({"results": [result]}))


if __name__ == "__main__":
    main()
