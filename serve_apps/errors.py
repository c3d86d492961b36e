"""The scoring service's own errors, beside the core's (:mod:`pumpfleet.errors`). Code
raises them like any domain error; the exception handlers in ``serve_apps/http_app.py`` are
the one place that turns them (and the core's ``InputError``) into HTTP answers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pumpfleet.errors import InputError, PumpfleetError

Loc = list[str | int]


class InvalidFields(InputError):
    """Fields of a request that are wrong, as (where, what) pairs: 422, each under
    ``body`` as FastAPI's own validation answers are."""

    def __init__(self, problems: Sequence[tuple[Sequence[str | int], str]]) -> None:
        self.problems: list[tuple[Loc, str]] = [(list(loc), msg) for loc, msg in problems]
        super().__init__("; ".join(f"{'.'.join(map(str, loc))}: {m}" for loc, m in self.problems))

    @classmethod
    def at(cls, field: str, msg: str) -> InvalidFields:
        """One wrong field, named by its dotted path (``readings.flow``)."""
        return cls([(field.split("."), msg)])


class NothingScored(InputError):
    """Not one item of a batch could be scored: 422 with every item's error."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        self.errors = errors
        super().__init__("no item could be scored")


class Unauthorized(PumpfleetError):
    """No credential, or one that matches nothing: 401."""


class Forbidden(PumpfleetError):
    """A valid credential that may not use this route: 403."""


class BodyTooLarge(InputError):
    """A body over the configured limit: 413."""


class Unavailable(PumpfleetError):
    """Something the route needs is not configured or not answering: 503."""


def split_message(e: InputError) -> tuple[Loc, str]:
    """Where and what, from a core InputError's ``"field.path: message"``."""
    if isinstance(e, InvalidFields) and e.problems:
        return e.problems[0]
    field, _, msg = str(e).partition(": ")
    return list(field.split(".")), msg
