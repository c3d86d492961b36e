"""A free TCP port on loopback for a server that binds it a moment later.

A port the kernel picks (``bind`` to port 0) comes from its ephemeral range, the range
it also takes the local port of every outgoing connection from. Between the pick and
the server's own ``bind``, any connection on the machine (Ray's gRPC channels, another
test's HTTP client) may take it, and the server fails with "Address already in use":
HAProxy's front door did, while Ray Tune trials ran beside it. So the port is drawn at
random from below that range and above Ray's worker ports (10002-19999 by default),
where nothing is handed out unasked, and checked free by binding it.
"""

from __future__ import annotations

import secrets
import socket
from pathlib import Path

LOW = 20_000  # above Ray's default worker ports
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
TRIES = 64


def ephemeral_low(path: Path = EPHEMERAL_RANGE) -> int:
    """The first port of the kernel's ephemeral range (Linux's default where unknown)."""
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host: str = "127.0.0.1") -> int:
    """A port on ``host`` that is free now and outside the ephemeral range; the kernel's
    pick where that range leaves no room below it or no port there is free."""
    high = ephemeral_low()
    for _ in range(TRIES if high - LOW >= 1000 else 0):
        port = LOW + secrets.randbelow(high - LOW)
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
