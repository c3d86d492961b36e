"""A replica's answer leaves in one write (serve_apps/one_write.py): a server killed
between a response's head and its body has sent nothing, so the front door can retry the
request elsewhere, instead of a head the client waits behind for ever."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# A real uvicorn server whose app sends a head, then (on /die) SIGKILLs its own process
# before the body, as a replica killed in that gap would be; /ok answers in two chunks.
SERVER = r"""
import os, signal, sys
import uvicorn
from serve_apps import one_write

if sys.argv[2] == "joined":
    assert one_write.install() == 2 and one_write.install() == 0

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ab", "more_body": True})
        await send({"type": "http.response.body", "body": b"cd"})
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"5")]})
    if scope["path"] == "/die":
        os.kill(os.getpid(), signal.SIGKILL)
    await send({"type": "http.response.body", "body": b"hello"})

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
            http=sys.argv[3])
"""


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ask(port: int, paths: list[str]) -> list[bytes]:
    """Each path asked on one keep-alive connection: what came back until the answer was
    whole (by its length), or the connection closed."""
    deadline = time.monotonic() + 20
    while True:
        try:
            conn = socket.create_connection(("127.0.0.1", port), timeout=10)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    answers = []
    with conn:
        for path in paths:
            conn.sendall(f"GET {path} HTTP/1.1\r\nhost: test\r\n\r\n".encode())
            got = b""
            while not (got.endswith(b"hello") or got.endswith(b"0\r\n\r\n")):
                try:
                    chunk = conn.recv(65536)
                except ConnectionResetError:
                    chunk = b""
                if not chunk:
                    break
                got += chunk
            answers.append(got)
    return answers


@pytest.fixture(params=["h11", "httptools"])
def impl(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@contextmanager
def _server(mode: str, impl: str) -> Iterator[int]:
    """The server of ``SERVER`` (``mode`` "joined" or "plain") on a free port, killed at
    the end whatever happened to it."""
    port = _port()
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(port), mode, impl], cwd=ROOT)
    try:
        yield port
    finally:
        proc.kill()
        proc.wait()


def test_a_server_killed_between_head_and_body_has_sent_nothing(impl: str) -> None:
    with _server("joined", impl) as port:
        (got,) = _ask(port, ["/die"])
    assert got == b""  # the front door's "empty response": it retries elsewhere


def test_without_it_the_head_goes_out_alone(impl: str) -> None:
    """The failure this module exists for, reproduced on uvicorn as it is."""
    with _server("plain", impl) as port:
        (got,) = _ask(port, ["/die"])
    assert got.startswith(b"HTTP/1.1 200 OK\r\n") and got.endswith(b"\r\n\r\n")
    assert b"hello" not in got


def test_answers_are_unchanged_whole_and_streamed(impl: str) -> None:
    with _server("joined", impl) as port:
        plain, streamed, again = _ask(port, ["/ok", "/stream", "/ok"])
    assert plain.startswith(b"HTTP/1.1 200 OK\r\n") and plain.endswith(b"\r\n\r\nhello")
    assert again.endswith(b"\r\n\r\nhello")  # the connection goes on as before
    assert streamed.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"transfer-encoding: chunked" in streamed.lower()
    assert streamed.endswith(b"2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n")
