"""A free TCP port on loopback for a server that binds it a moment later.

A port the kernel picks (``bind`` to port 0) comes from its ephemeral range, the range
it also takes the local port of every outgoing connection from. Between the pick and
the server's own ``bind``, any connection on the machine (Ray's gRPC channels, another
test's HTTP client) may take it, and the server fails with "Address already in use":
HAProxy's front door did, while Ray Tune trials ran beside it. So the port is drawn at
random from below that range and above Ray's worker ports (10002-19999 by default),
where nothing is handed out unasked, and checked free by binding it.

A port handed out is free when it is drawn, not until its server binds it, which may be
minutes later (Serve's front-door ports are fixed when Ray starts). So a process never
hands out the same port twice, and ``PUMPFLEET_PORT_RANGE`` (``LOW-HIGH``) narrows the
draw: processes that pick ports side by side (the test suite's two workers, each with
the servers it starts) draw from ranges of their own and cannot take each other's.
"""

from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path

from pumpfleet.errors import InputError

LOW = 20_000  # above Ray's default worker ports
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
RANGE_VAR = "PUMPFLEET_PORT_RANGE"
TRIES = 64
_given: set[int] = set()  # handed out by this process


def ephemeral_low(path: Path = EPHEMERAL_RANGE) -> int:
    """The first port of the kernel's ephemeral range (Linux's default where unknown)."""
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def draw_range() -> tuple[int, int]:
    """Where :func:`free_port` draws from, ``[low, high)``: ``PUMPFLEET_PORT_RANGE`` where
    set, else from :data:`LOW` to the ephemeral range."""
    text = os.environ.get(RANGE_VAR)
    if not text:
        return LOW, ephemeral_low()
    low, sep, high = text.partition("-")
    if sep and low.isdigit() and high.isdigit() and 1024 <= int(low) <= int(high) <= 65535:
        return int(low), int(high) + 1
    raise InputError(f"{RANGE_VAR} must be LOW-HIGH within 1024-65535, got {text!r}")


def free_port(host: str = "127.0.0.1") -> int:
    """A port on ``host`` that is free now, never handed out before by this process, and
    in :func:`draw_range`; the kernel's pick where that range has fewer than 1,000 ports
    or none of those drawn is free."""
    low, high = draw_range()
    for _ in range(TRIES if high - low >= 1000 else 0):
        port = low + secrets.randbelow(high - low)
        if port in _given:
            continue
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        _given.add(port)
        return port
    with socket.socket() as s:
        s.bind((host, 0))
        port = int(s.getsockname()[1])
    _given.add(port)
    return port
