"""The service's FastAPI app around the routes (``serve_apps/scoring.py``): the one place
where errors become HTTP answers, and the doors (``serve_apps/doors.py``: credentials,
content types and body limits, checked before a body is read) in front of every route.

Errors: the core's ``InputError`` and the service's own (``serve_apps/errors.py``) are
raised wherever they are found and answered here, as FastAPI answers its own validation
errors: ``{"detail": [{"loc": ["body", ...], "msg": ...}]}`` for a 422.
"""

from __future__ import annotations

from typing import Any

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from pumpfleet.errors import ConflictError, InputError, NotFoundError
from serve_apps.doors import CALLER, Caller, DoorsFirst, Who
from serve_apps.errors import (
    BodyTooLarge,
    Forbidden,
    InvalidFields,
    NothingScored,
    Unauthorized,
    Unavailable,
)

# the doors and the front door's request id ahead of FastAPI's own middleware
app = DoorsFirst(title="pumpfleet scoring", version="1")


def _detail(status: int, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": detail}, headers=headers)


@app.exception_handler(RequestValidationError)
async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    # FastAPI echoes the offending input back, and a NaN in it cannot be written as
    # JSON (a 500): answer with where and what only.
    errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
    return _detail(422, errors)


@app.exception_handler(InvalidFields)
async def _invalid_fields(request: Request, exc: InvalidFields) -> JSONResponse:
    return _detail(422, [{"loc": ["body", *loc], "msg": msg} for loc, msg in exc.problems])


@app.exception_handler(NothingScored)
async def _nothing_scored(request: Request, exc: NothingScored) -> JSONResponse:
    return _detail(422, {"msg": str(exc), "errors": exc.errors})


@app.exception_handler(BodyTooLarge)
async def _too_large(request: Request, exc: BodyTooLarge) -> JSONResponse:
    return _detail(413, str(exc))


@app.exception_handler(InputError)
async def _bad_input(request: Request, exc: InputError) -> JSONResponse:
    # any other of the core's input errors (an edge upload's, say): the whole message
    return _detail(422, [{"loc": ["body"], "msg": str(exc)}])


@app.exception_handler(ConflictError)
async def _conflict(request: Request, exc: ConflictError) -> JSONResponse:
    return _detail(409, str(exc))


@app.exception_handler(NotFoundError)
async def _not_found(request: Request, exc: NotFoundError) -> JSONResponse:
    return _detail(404, str(exc))


@app.exception_handler(Unauthorized)
async def _unauthorized(request: Request, exc: Unauthorized) -> JSONResponse:
    return _detail(401, str(exc), headers={"WWW-Authenticate": "Bearer"})


@app.exception_handler(Forbidden)
async def _forbidden(request: Request, exc: Forbidden) -> JSONResponse:
    return _detail(403, str(exc))


@app.exception_handler(Unavailable)
async def _unavailable(request: Request, exc: Unavailable) -> JSONResponse:
    return _detail(503, str(exc))


# --- who may call, and how much it reads (checked by the doors, ahead of FastAPI) -----


def _let_in(request: Request, who: Who) -> Caller:
    """What the door decided for this request (``scope[CALLER]``); Unauthorized if it let
    in no caller of this kind, so a route is never reached around its door."""
    caller = request.scope.get(CALLER)
    if not isinstance(caller, Caller) or caller.who is not who:
        raise Unauthorized("missing or invalid credentials")
    return caller


async def require_key(request: Request) -> None:
    """Scoring routes: a valid API key (``X-API-Key``), checked by the door."""
    _let_in(request, Who.SCORING)


async def require_admin(request: Request) -> None:
    """Admin routes: the admin bearer token (a scoring key gets 403), checked by the door."""
    _let_in(request, Who.ADMIN)


async def require_device(request: Request) -> None:
    """The edge upload route: a device's own token (``pumpfleet edge device issue``)."""
    _let_in(request, Who.DEVICE)


def device_of(request: Request) -> str | None:
    """The device whose token the upload came with (None under ``insecure_dev``)."""
    return _let_in(request, Who.DEVICE).device


SCORING = [Depends(require_key)]
ADMIN = [Depends(require_admin)]
DEVICE = [Depends(require_device)]


async def read_body(request: Request, limit: int) -> bytes:
    """The request's body (the door has read it within its limits already); BodyTooLarge
    over ``limit`` bytes."""
    body = await request.body()
    if len(body) > limit:
        raise BodyTooLarge(f"body over {limit} bytes")
    return body
