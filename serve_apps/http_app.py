"""The service's FastAPI app around the routes (``serve_apps/scoring.py``): the one place
where errors become HTTP answers, the credentials each route needs, and the body limit.

Errors: the core's ``InputError`` and the service's own (``serve_apps/errors.py``) are
raised wherever they are found and answered here, as FastAPI answers its own validation
errors: ``{"detail": [{"loc": ["body", ...], "msg": ...}]}`` for a 422.
"""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from pumpfleet.errors import InputError
from serve_apps.errors import (
    BodyTooLarge,
    Forbidden,
    InvalidFields,
    NothingScored,
    Unauthorized,
    Unavailable,
)
from serve_apps.front_door import RequestIds
from serve_apps.schemas import ScoringConfig
from serve_apps.security import API_KEY_HEADER, Access, check_admin, check_scoring

app = FastAPI(title="pumpfleet scoring", version="1")


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


@app.exception_handler(Unauthorized)
async def _unauthorized(request: Request, exc: Unauthorized) -> JSONResponse:
    return _detail(401, str(exc), headers={"WWW-Authenticate": "Bearer"})


@app.exception_handler(Forbidden)
async def _forbidden(request: Request, exc: Forbidden) -> JSONResponse:
    return _detail(403, str(exc))


@app.exception_handler(Unavailable)
async def _unavailable(request: Request, exc: Unavailable) -> JSONResponse:
    return _detail(503, str(exc))


# --- who may call ------------------------------------------------------------------


def _deny(access: Access) -> None:
    if access is Access.MISSING:
        raise Unauthorized("missing or invalid credentials")
    if access is Access.FORBIDDEN:
        raise Forbidden("this key may not use admin routes")


async def require_key(request: Request) -> None:
    """Scoring routes: a valid API key (``X-API-Key``). A dependency, so it runs before
    the body is parsed: an unauthenticated caller learns nothing about the schema."""
    c: ScoringConfig = request.app.state.config
    _deny(check_scoring(request.headers.get(API_KEY_HEADER), c.api_key_sha256, c.insecure_dev))


async def require_admin(request: Request) -> None:
    """Admin routes: the admin bearer token; a scoring key gets 403."""
    c: ScoringConfig = request.app.state.config
    _deny(
        check_admin(
            request.headers.get("authorization"),
            request.headers.get(API_KEY_HEADER),
            c.admin_token_sha256,
            c.api_key_sha256,
            c.insecure_dev,
        )
    )


SCORING = [Depends(require_key)]
ADMIN = [Depends(require_admin)]


# --- how much it reads ---------------------------------------------------------------


class _BodyLimit:
    """413 before a large body is read, from its declared length (:func:`read_body` also
    checks what it actually read, for bodies sent without one). Plain ASGI: Starlette's
    function middleware costs a task and a stream per request."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        limit = getattr(app.state, "max_body_bytes", None)
        if scope["type"] == "http" and limit is not None:
            for name, value in scope["headers"]:
                if name == b"content-length":
                    if value.isdigit() and int(value) > limit:
                        await _detail(413, f"body over {limit} bytes")(scope, receive, send)
                        return
                    break
        await self.inner(scope, receive, send)


app.add_middleware(_BodyLimit)
# the front door's id of each request, for its rows in the prediction log
app.add_middleware(RequestIds)


async def read_body(request: Request, limit: int) -> bytes:
    """The request's body; BodyTooLarge over ``limit`` bytes, declared or read."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"body over {limit} bytes")
    body = await request.body()
    if len(body) > limit:
        raise BodyTooLarge(f"body over {limit} bytes")
    return body
