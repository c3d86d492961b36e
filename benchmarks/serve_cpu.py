"""CPU a request costs the servers, from ``/proc``: what ``benchmarks.serve_load`` reports
beside each load arm's requests per second.

On a machine shared with other jobs, requests per second move with the others' load by
tens of percent between arms run a minute apart; the CPU time the servers' own processes
spend per request moves far less, and on 2 saturated cores it is what bounds throughput
(about 2 s of CPU a second, divided by the CPU of a request). Summed user and system time
of a process tree (the benchmark's own process, where the load comes from, left out);
Linux only: elsewhere every figure is None.
"""

from __future__ import annotations

import os
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stats() -> dict[int, tuple[int, float]]:
    """(parent pid, CPU seconds) of every live process, from one scan of ``/proc``."""
    out = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry.name}/stat").read_bytes()
        except OSError:  # gone since the scan
            continue
        fields = raw[raw.rindex(b")") + 2 :].split()  # the name may hold spaces
        out[int(entry.name)] = int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICK
    return out


def descendants(root: int, stats: dict[int, tuple[int, float]] | None = None) -> set[int]:
    """Every process below ``root`` (from ``/proc``, or from a scan already made)."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in (stats if stats is not None else _stats()).items():
        children.setdefault(ppid, []).append(pid)
    out: set[int] = set()
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        if pid not in out:
            out.add(pid)
            todo.extend(children.get(pid, []))
    return out


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


class CpuMeter:
    """CPU per request of a load run: every server process under ``root`` (a server's own
    process, or this one, whose load client is left out) and, for Serve, its replicas."""

    def __init__(self, root: int, replicas: bool) -> None:
        self.root, self.replicas = root, replicas
        self.start = self._now()

    def _now(self) -> tuple[float | None, float | None]:
        """CPU seconds so far of the server's processes and of Serve's replicas."""
        if not Path("/proc/self/stat").exists():
            return None, None
        stats = _stats()
        below = descendants(self.root, stats)
        if not self.replicas:  # a plain server: its own process and its workers
            return sum(stats[p][1] for p in below | ({self.root} & stats.keys())), None
        from benchmarks.serve_harness import REPLICA_TITLE

        replicas = [p for p in below if _cmdline(p).startswith(REPLICA_TITLE)]
        return sum(stats[p][1] for p in below), sum(stats[p][1] for p in replicas)

    def per_request_us(self, requests: int) -> dict[str, float | None]:
        """µs of CPU per request since this meter began: ``cpu_us`` (every process),
        ``replica_cpu_us`` (Serve's replicas; None for another server)."""
        end = self._now()
        out: dict[str, float | None] = {}
        for key, a, b in zip(("cpu_us", "replica_cpu_us"), self.start, end, strict=True):
            if a is None or b is None or requests <= 0:
                out[key] = None
            else:
                out[key] = (b - a) / requests * 1e6
        return out
