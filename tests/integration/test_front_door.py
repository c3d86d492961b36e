"""The front door (Serve's HAProxy ingress, ``serve_apps/front_door.py``) under hostile and
faulty traffic, on two replicas of an untrained model (issue 16): slow clients are cut
off, overload is shed with 503 and Retry-After and every request is answered, a replica
killed under load fails no request and loses no logged row, and every port the service
opens is on loopback."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from benchmarks import serve_harness as h
from serve_apps import front_door

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory, ray_session: Any) -> Iterator[h.Service]:
    with h.service(tmp_path_factory.mktemp("front-door"), replicas=2) as s:
        yield s
    # Serve is down: its HAProxy went with it
    assert h.haproxy_pids() == []


def _settled_rows(s: h.Service, expected: int | None = None, seconds: float = 20) -> int:
    """The prediction log's rows once flushes have caught up (the flush thread writes
    every second; a killed replica's rows come back when the next one starts)."""
    deadline = time.monotonic() + seconds
    last = -1
    while time.monotonic() < deadline:
        time.sleep(1.5)
        rows, _ = h.logged_rows(s.settings)
        if rows == last and (expected is None or rows == expected):
            return rows
        last = rows
    return last


def test_every_port_the_service_opens_is_on_loopback(svc: h.Service) -> None:
    door = h.haproxy_pids()
    assert door, "no HAProxy: the front door is not on"
    ports = h.listening(set(door))
    # the front door itself, its stats page and its Prometheus exporter
    assert {p for _, p, _ in ports} >= {svc.port}
    assert len(ports) >= 3 and {a for a, _, _ in ports} == {"127.0.0.1"}, ports
    # the replicas' own HTTP ports (direct ingress, 30000 up), behind the door
    replicas = [x for x in h.listening(set(h.replica_pids())) if 30000 <= x[1] < 31000]
    assert len(replicas) == 2 and {a for a, _, _ in replicas} == {"127.0.0.1"}, replicas
    # its files in the front door's folder and its sockets in a private one (0700), not in
    # the system temp folder's shared /tmp/haproxy-serve
    root = Path(os.environ[front_door.DIR_VAR])
    seen = 0
    for pid in door:
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        except FileNotFoundError:  # an old HAProxy that a reload let exit meanwhile
            continue
        seen += 1
        assert Path(args[args.index("-f") + 1]).parent.parent == root, args
    assert seen, "every HAProxy listed had exited"
    sockets = Path(os.environ["RAY_SERVE_HAPROXY_SOCKET_PATH"]).parent
    assert sockets.stat().st_mode & 0o777 == 0o700


def _answer(s: socket.socket, line: bytes) -> bytes | None:
    """What the door sent a slow client (an error's name if it reset), else None after
    sending it one more ``line``. Read before sending: a line sent after the 408 and
    close is answered by a reset, which drops the 408 unread."""
    for send in (False, True):
        try:
            if send:
                s.send(line)
            return s.recv(64)
        except BlockingIOError:
            continue
        except OSError as e:
            return type(e).__name__.encode()
    return None


def test_slow_clients_are_cut_off_and_oversized_bodies_refused_at_once(svc: h.Service) -> None:
    timeout = front_door.REQUEST_TIMEOUT_S
    # 80 clients that send a header line a second and never finish (slowloris)
    slow = [socket.create_connection(("127.0.0.1", svc.port)) for _ in range(80)]
    for s in slow:
        s.sendall(b"POST /v1/score HTTP/1.1\r\nhost: pumpfleet\r\n")
        s.setblocking(False)
    # one that sends its head and then a trickle of its body
    trickle = socket.create_connection(("127.0.0.1", svc.port))
    trickle.sendall(
        b"POST /v1/score HTTP/1.1\r\nhost: pumpfleet\r\ncontent-type: application/json\r\n"
        + f"x-api-key: {svc.key}\r\ncontent-length: 4000\r\n\r\n".encode()
    )
    trickle.setblocking(False)
    started = time.monotonic()
    # a body declared at 10^12 bytes is refused before a byte of it is read
    with socket.create_connection(("127.0.0.1", svc.port), timeout=5) as big:
        big.sendall(
            b"POST /v1/score/batch HTTP/1.1\r\nhost: pumpfleet\r\n"
            + f"x-api-key: {svc.key}\r\ncontent-length: {10**12}\r\n\r\n".encode()
        )
        assert big.recv(64).startswith(b"HTTP/1.1 413")
    assert time.monotonic() - started < 2
    answers: dict[int, tuple[float, bytes]] = {}
    clients = [*slow, trickle]
    while len(answers) < len(clients) and time.monotonic() - started < timeout + 10:
        for i, s in enumerate(clients):
            if i in answers:
                continue
            got = _answer(s, b"x-more: 1\r\n" if s is not trickle else b" ")
            if got is not None:
                answers[i] = (time.monotonic() - started, got)
        time.sleep(1)
    # the service answers others meanwhile
    r = httpx.post(f"{svc.url}/v1/score", json=h.bodies(svc.spec, 1)[0], headers=svc.headers)
    for s in clients:
        s.close()
    assert len(answers) == len(clients), f"{len(clients) - len(answers)} never cut off"
    not_408 = {i: a for i, a in answers.items() if not a[1].startswith(b"HTTP/1.1 408")}
    assert not not_408, not_408
    assert max(t for t, _ in answers.values()) < 2 * timeout + 3
    assert r.status_code == 200, r.text


def test_overload_is_shed_with_503_and_retry_after_and_every_request_answered(
    svc: h.Service,
) -> None:
    async def overload_and_reload() -> tuple[list[h.Outcome], list[str]]:
        reload: list[str] = []

        async def admin() -> None:
            await asyncio.sleep(2)
            async with httpx.AsyncClient(base_url=svc.url, timeout=10) as c:
                for _ in range(10):  # an operator who honours Retry-After
                    got = await c.post("/v1/admin/reload", headers=svc.admin_headers)
                    reload.append(str(got.status_code))
                    if got.status_code != 503:
                        return
                    await asyncio.sleep(float(got.headers["retry-after"]))

        load = h.clients(svc.port, svc.scoring, 300, 6)
        done, _ = await asyncio.gather(load, admin())
        return done, reload

    done, reload = asyncio.run(overload_and_reload())
    statuses = h.by_status(done)
    assert set(statuses) == {"200", "503"}, statuses  # none unanswered, no other error
    assert statuses["200"] > 0 and statuses["503"] > 0, statuses
    assert {o.retry_after for o in done if o.status == "503"} == {"1"}
    assert reload[-1] == "200", reload
    r = httpx.post(f"{svc.url}/v1/score", json=h.bodies(svc.spec, 1)[0], headers=svc.headers)
    assert r.status_code == 200


def test_a_replica_killed_under_load_fails_no_request_and_loses_no_row(svc: h.Service) -> None:
    before = _settled_rows(svc)
    killed: list[int] = []

    async def kill_twice() -> None:
        for _ in range(2):
            await asyncio.sleep(2)
            killed.append(h.kill_replica())
            deadline = time.monotonic() + 60
            while len(h.replica_pids()) < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.5)

    async def run() -> list[h.Outcome]:
        done, _ = await asyncio.gather(h.clients(svc.port, svc.scoring, 16, 12), kill_twice())
        return done

    done = asyncio.run(run())
    assert len(killed) == 2 and len(h.replica_pids()) == 2
    statuses = h.by_status(done)
    # HAProxy sends a request whose replica died before answering to the other one; an
    # answer leaves a replica in one write (serve_apps/one_write.py), so none is cut.
    assert statuses == {"200": len(done)}, statuses
    # Every answered request's row is logged exactly once.
    assert _settled_rows(svc, expected=before + len(done)) - before == len(done)
