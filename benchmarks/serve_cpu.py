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


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds) of a live process; None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = raw[raw.rindex(b")") + 2 :].split()  # the name may hold spaces
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICK


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def tree_cpu(root: int, named: bytes | None = None, with_root: bool = False) -> float | None:
    """CPU seconds of ``root``'s descendants (and of ``root`` ``with_root``), or of those
    of them whose command line holds ``named``; None without ``/proc``."""
    if not Path("/proc/self/stat").exists():
        return None
    stats = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            found = _stat(int(entry.name))
            if found is not None:
                stats[int(entry.name)] = found
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0.0, list(children.get(root, []))
    if with_root and root in stats:
        todo.append(root)
    while todo:
        pid = todo.pop()
        if pid != root:
            todo.extend(children.get(pid, []))
        if named is None or named in _cmdline(pid):
            total += stats[pid][1]
    return total


REPLICAS = b"ServeReplica:pumpfleet:"


class CpuMeter:
    """CPU per request of a load run: every server process under ``root`` (a server's own
    process, or this one, whose load client is left out) and, for Serve, its replicas."""

    def __init__(self, root: int, replicas: bool) -> None:
        self.root, self.replicas = root, replicas
        self.start = self._now()

    def _now(self) -> tuple[float | None, float | None]:
        if not self.replicas:  # a plain server: its own process and its workers
            return tree_cpu(self.root, with_root=True), None
        return tree_cpu(self.root), tree_cpu(self.root, REPLICAS)

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
