"""A replica's answer leaves in one write: its head waits for its body's first bytes.

uvicorn (the HTTP server in each replica, direct ingress) writes a response's status line
and headers to the socket as soon as the app sends ``http.response.start``, and the body
when ``http.response.body`` follows. Between the two, the messages cross from the thread
the routes run in to the server's loop (Serve runs user code in a thread of its own), so
a replica killed (SIGKILL, a node lost) in that gap has sent the front door a head with
no body. HAProxy retries a request whose replica died before answering
(``retry-on empty-response``), but not one whose answer has started: the client saw the
connection close mid-answer (once in 9,866 requests with two kills, in CI).

:func:`install` makes each response's head wait for the next write of the same response
(its body, or its first chunk) and go out with it, in one ``transport.write``: one
``send`` on the socket. A replica killed before that call has sent nothing, and the
front door sends the request again to another replica; one killed after it has handed
the whole answer to the kernel, which delivers it. Nothing else changes: the bytes, their
order and every later write of a streamed body are uvicorn's own.

It wraps ``RequestResponseCycle.send`` of both uvicorn HTTP implementations (httptools
and h11): the cycle's ``transport`` is swapped, for that response only, for a
:class:`HeldHead` that holds the first write. uvicorn has no option for this, and Serve
builds the server's configuration itself (``ray.serve._private.http_util``).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

_MARK = "_pumpfleet_one_write"


class HeldHead:
    """A transport whose first write (a response's head) waits for the second (its
    body's first bytes, or the close) and goes out joined to it; then it passes every
    call through to the transport it wraps."""

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.head: bytes | None = None
        self.holding = True

    def write(self, data: bytes) -> None:
        if self.holding and self.head is None:
            self.head = bytes(data)
            return
        self.holding = False
        if self.head is not None:
            data, self.head = self.head + data, None
        self.transport.write(data)

    def release(self) -> None:
        """Write the held head (if any) alone and stop holding."""
        self.holding = False
        if self.head is not None:
            head, self.head = self.head, None
            self.transport.write(head)

    def close(self) -> None:
        self.release()
        self.transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


Send = Callable[[Any, Any], Awaitable[None]]


def _one_write(send: Send) -> Send:
    @functools.wraps(send)
    async def send_joined(cycle: Any, message: Any) -> None:
        if message.get("type") == "http.response.start" and not cycle.response_started:
            cycle.transport = HeldHead(cycle.transport)
        try:
            await send(cycle, message)
        except BaseException:
            _release(cycle)
            raise
        held = cycle.transport
        if isinstance(held, HeldHead) and (not held.holding or cycle.response_complete):
            # the head went out with the body (or the answer ended without a write)
            held.release()
            cycle.transport = held.transport

    setattr(send_joined, _MARK, True)
    return send_joined


def _release(cycle: Any) -> None:
    held = cycle.transport
    if isinstance(held, HeldHead):
        held.release()
        cycle.transport = held.transport


def _cycles() -> list[Any]:
    found: list[Any] = []
    from uvicorn.protocols.http import h11_impl

    found.append(h11_impl.RequestResponseCycle)
    try:
        from uvicorn.protocols.http import httptools_impl
    except ImportError:  # httptools is optional to uvicorn
        return found
    found.append(httptools_impl.RequestResponseCycle)
    return found


def install() -> int:
    """Join each response's head to its body in every uvicorn HTTP implementation of this
    process; idempotent. The number of implementations changed by this call."""
    changed = 0
    for cycle in _cycles():
        send = cycle.send
        if getattr(send, _MARK, False):
            continue
        cycle.send = _one_write(send)
        changed += 1
    return changed
