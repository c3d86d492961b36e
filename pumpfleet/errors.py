"""Domain errors. The edges translate them: a one-line exit in the CLI, a 4xx in Serve."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


class PumpfleetError(Exception):
    """Base of every error this project raises on purpose."""


class InputError(PumpfleetError):
    """Something the user gave us is wrong: a path, a number, a file's contents."""


class DataError(PumpfleetError):
    """The data cannot be used as it is (empty, wrong schema, too little of it)."""


class RegistryError(PumpfleetError):
    """The model registry does not hold what was asked for."""


class BundleError(PumpfleetError):
    """An edge bundle is malformed, tampered with or signed by the wrong key."""


class ConflictError(PumpfleetError):
    """A request contradicts what was stored before under the same key (HTTP 409)."""


class NotFoundError(PumpfleetError):
    """What was asked for by its id or name is not there (HTTP 404)."""


class ParityError(PumpfleetError):
    """An exported model does not score like the model it was exported from."""


def one_line(e: ValidationError) -> str:
    """A pydantic validation error as one line naming the first bad field."""
    first = e.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "input"
    return f"{where}: {first['msg']}"
