"""Limits before work, on every route of the scoring service: who may call it, which
content type its body may have and how large it may be, all decided from the request's
headers before a byte of the body is read; then the body is read here, within its size
limit and its time limit, before the route sees it.

Plain ASGI middleware (``Doors``): FastAPI reads and parses a body before it runs a
route's dependencies, so a credential checked there is checked too late (a 100 MB body
without a key was parsed, then refused), and Starlette's function middleware costs a task
and a stream per request. The route's own dependency (``http_app.require_key`` and the
others) only confirms what the door decided, so a route is never reached around it.

Each route's door is in :data:`DOORS`; a path under ``/v1/`` that is not listed needs a
scoring key, so a route added without a door is not open.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from enum import Enum
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp

from pumpfleet.devices import DeviceBook, Verifier
from pumpfleet.errors import PumpfleetError
from serve_apps.front_door import RequestIds
from serve_apps.schemas import ARROW_STREAM, JSON, ScoringConfig
from serve_apps.security import Access, check_admin, check_scoring, matches

log = logging.getLogger(__name__)

CALLER = "pumpfleet.caller"  # the scope key of the door's verdict (a Caller)
ISSUE_COMMAND = "pumpfleet edge device issue --device <device_id>"


class Who(Enum):
    ANYONE = "anyone"
    SCORING = "scoring"  # a scoring key (X-API-Key)
    ADMIN = "admin"  # the admin token (Authorization: Bearer)
    DEVICE = "device"  # an edge device's own token (pumpfleet.devices)


@dataclass(frozen=True, slots=True)
class Door:
    """Who may call a route, the media types its body may have (none listed: the route
    takes no body, and any is ignored) and whether it takes the large body limit
    (batches, uploads) or the small one."""

    who: Who
    types: frozenset[str] = frozenset()
    large: bool = False


DOORS: dict[str, Door] = {
    "/v1/score": Door(Who.SCORING, frozenset({JSON})),
    "/v1/score/batch": Door(Who.SCORING, frozenset({JSON, ARROW_STREAM}), large=True),
    "/v1/models": Door(Who.SCORING),
    "/v1/feedback": Door(Who.SCORING, frozenset({JSON})),
    "/v1/edge/upload": Door(Who.DEVICE, frozenset({JSON}), large=True),
    "/v1/admin/split": Door(Who.ADMIN, frozenset({JSON})),
    "/v1/admin/reload": Door(Who.ADMIN),
    "/v1/admin/retrain": Door(Who.ADMIN, frozenset({JSON})),
    # the edge fleet (serve_apps/edge_routes.py): the devices view for operators; a
    # device's signed assignment and the bundle it names, each with its own token
    "/v1/devices": Door(Who.SCORING),
    "/v1/edge/assignment": Door(Who.DEVICE),
    "/v1/edge/bundles/{pump_class}/{bundle}": Door(Who.DEVICE),
    # the crews' view (serve_apps/fleet_routes.py): the work list, alerts and their actions
    "/v1/fleet": Door(Who.SCORING),
    "/v1/fleet/{pump_id}": Door(Who.SCORING),
    "/v1/alerts": Door(Who.SCORING),
    "/v1/alerts/{alert_id}/ack": Door(Who.SCORING, frozenset({JSON})),
    "/v1/alerts/{alert_id}/assign": Door(Who.SCORING, frozenset({JSON})),
    "/v1/alerts/{alert_id}/close": Door(Who.SCORING, frozenset({JSON})),
    # the fleet board (serve_apps/board_routes.py): the drift status and a pump's sensor
    # readings it shows; its page and assets (/board, /board/<asset>) hold no data and
    # are OPEN, as any path off /v1/
    "/v1/drift": Door(Who.SCORING),
    "/v1/fleet/{pump_id}/sensors": Door(Who.SCORING),
}
UNLISTED_V1 = Door(Who.SCORING)
# The hot route: a single window's score. Once its door has let it in and read its body,
# the replica's lean path (``app.state.score_one``, ``PumpScorer.score_body``) answers a
# body msgspec proves valid without FastAPI's routing, dependencies, validation and
# response model (a few hundred microseconds a request); any other body goes on to the
# route, which answers it (and its errors) as ever.
SCORE = "/v1/score"
OPEN = Door(Who.ANYONE)  # probes, /docs, /openapi.json, and paths that are not routes


def _template(path: str) -> re.Pattern[str]:
    """A route path with ``{parameters}`` as a pattern: each parameter one segment."""
    parts = re.split(r"(\{[^}/]+\})", path)
    return re.compile("".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts))


_TEMPLATES = [(_template(k), d) for k, d in DOORS.items() if "{" in k]


def door_of(path: str) -> Door:
    """The door of a route path (without the app's route prefix); a path with parameters
    is listed as its route's template (``/v1/alerts/{alert_id}/ack``)."""
    path = path.rstrip("/") or "/"
    door = DOORS.get(path)
    if door is not None:
        return door
    if path.startswith("/v1/"):
        for pattern, templated in _TEMPLATES:
            if pattern.fullmatch(path):
                return templated
        return UNLISTED_V1
    return OPEN


@dataclass(frozen=True, slots=True)
class Caller:
    """Whom a door let in: the credential's kind, and for a device token its device
    (None under ``insecure_dev``: any device)."""

    who: Who
    device: str | None = None


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    detail: str


UNAUTHORIZED = Refusal(401, "missing or invalid credentials")


def _bearer(authorization: str | None) -> str | None:
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def admit(
    door: Door,
    api_key: str | None,
    authorization: str | None,
    config: ScoringConfig,
    devices: Verifier,
) -> Caller | Refusal:
    """Whether the credentials of a request pass ``door``: its Caller, or why not (401:
    none or none that matches; 403: a valid credential of the wrong kind)."""
    if door.who is Who.ANYONE:
        return Caller(Who.ANYONE)
    if door.who is Who.SCORING:
        ok = check_scoring(api_key, config.api_key_sha256, config.insecure_dev)
        return Caller(Who.SCORING) if ok is Access.OK else UNAUTHORIZED
    if door.who is Who.ADMIN:
        access = check_admin(
            authorization,
            api_key,
            config.admin_token_sha256,
            config.api_key_sha256,
            config.insecure_dev,
        )
        if access is Access.FORBIDDEN:
            return Refusal(403, "this key may not use admin routes")
        return Caller(Who.ADMIN) if access is Access.OK else UNAUTHORIZED
    if config.insecure_dev:
        return Caller(Who.DEVICE)
    token = api_key or _bearer(authorization)
    device = devices.device_of(token)
    if device is not None:
        return Caller(Who.DEVICE, device)
    if matches(token, config.api_key_sha256):
        return Refusal(
            403,
            "a scoring key may not upload as a device: each device uploads with a token "
            f"of its own ({ISSUE_COMMAND})",
        )
    return UNAUTHORIZED


def body_problem(
    door: Door, content_type: str | None, declared: int | None, has_body: bool, limit: int
) -> Refusal | None:
    """Why a body may not be read (415: a media type the route does not take; 413:
    declared over ``limit`` bytes); None if it may."""
    if not has_body:
        return None
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if door.types and media not in door.types:
        takes = " or ".join(sorted(door.types))
        return Refusal(415, f"content-type {media or '(none)'} is not accepted here: send {takes}")
    if declared is not None and declared > limit:
        return Refusal(413, f"body over {limit} bytes")
    return None


def body_limit(door: Door, config: ScoringConfig) -> int:
    if door.large:
        return config.max_body_bytes
    return min(config.max_small_body_bytes, config.max_body_bytes)


async def _answer(refusal: Refusal, scope: Any, receive: Any, send: Any) -> None:
    headers = {"WWW-Authenticate": "Bearer"} if refusal.status == 401 else None
    response = JSONResponse({"detail": refusal.detail}, refusal.status, headers)
    await response(scope, receive, send)


class _Gone(Exception):
    """The client went away while sending its body."""


async def read_within(receive: Any, limit: int, seconds: float) -> bytes | Refusal:
    """The whole body from ``receive``, or 413 past ``limit`` bytes, or 408 if it has not
    all come within ``seconds``; _Gone if the client disconnected."""
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(seconds):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise _Gone
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    return Refusal(413, f"body over {limit} bytes")
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
    except TimeoutError:
        return Refusal(408, f"the body did not arrive within {seconds:g} s")
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


_NOBODY = Verifier(DeviceBook())


class Doors:
    """The ASGI middleware that applies each route's door (:func:`admit`,
    :func:`body_problem`) and reads its body (:func:`read_within`) before the app sees
    the request; what it let in is ``scope[CALLER]``. The config and the device book
    are the app's state (``config``, ``devices``), set by the replica."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.inner(scope, receive, send)
            return
        path = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        door = door_of(path)
        state = scope["app"].state
        config: ScoringConfig | None = getattr(state, "config", None)
        if config is None:
            await _answer(Refusal(503, "the service is starting"), scope, receive, send)
            return
        api_key = authorization = content_type = declared = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"x-api-key":
                api_key = value.decode("latin-1")
            elif name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == b"content-length":
                declared = int(value) if value.isdigit() else None
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
        verdict = admit(door, api_key, authorization, config, getattr(state, "devices", _NOBODY))
        if isinstance(verdict, Refusal):
            await _answer(verdict, scope, receive, send)
            return
        scope[CALLER] = verdict
        has_body = chunked or bool(declared)
        limit = body_limit(door, config)
        refused = body_problem(door, content_type, declared, has_body, limit)
        if refused is not None:
            await _answer(refused, scope, receive, send)
            return
        if not has_body:
            await self.inner(scope, receive, send)
            return
        try:
            body = await read_within(receive, limit, config.body_timeout_seconds)
        except _Gone:
            return
        if isinstance(body, Refusal):
            await _answer(body, scope, receive, send)
            return
        if path == SCORE and scope["method"] == "POST":
            lean = getattr(state, "score_one", None)
            try:
                answer = None if lean is None else lean(body)
            except PumpfleetError:  # before anything was logged: the route answers it
                answer = None
            if answer is not None:
                await _ok_json(answer, send)
                return
        await self.inner(scope, _replay(body, receive), send)


class DoorsFirst(FastAPI):
    """FastAPI with the front door's request id (:class:`RequestIds`) and :class:`Doors`
    ahead of all its own middleware (its error, telemetry and body-limit layers): a
    request a door refuses, and the hot route's lean path, pass through nothing else;
    what the doors let through goes on to FastAPI's stack as it would without them."""

    def build_middleware_stack(self) -> ASGIApp:
        return RequestIds(Doors(super().build_middleware_stack()))


async def _ok_json(body: bytes, send: Any) -> None:
    """A 200 JSON answer with the headers Starlette's JSONResponse gives it."""
    headers = [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _replay(body: bytes, receive: Any) -> Any:
    """A receive that gives the body read already, then what the client sends next (its
    disconnect)."""
    first = True

    async def replayed() -> Any:
        nonlocal first
        if first:
            first = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
