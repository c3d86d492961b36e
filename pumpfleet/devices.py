"""Device credentials: each edge device uploads with a token of its own, issued and revoked
by the operator (``pumpfleet edge device issue|revoke|list``). The service keeps only the
tokens' sha256 digests (``<workspace>/devices.json``, or any storage URI) and re-reads
them as it refreshes, so a revoked device is refused within seconds; a device may write
only as itself.

A token is ``pfd.<device_id>.<secret>``: the device id says which digest to compare with
(in constant time), the secret is 32 random bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

from pumpfleet import storage
from pumpfleet.errors import InputError
from pumpfleet.names import PlainName, plain_name

PREFIX = "pfd"
FILE = "devices.json"


class DeviceEntry(BaseModel):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    issued: str
    revoked: str | None = None


class DeviceBook(BaseModel):
    """Every device's credential digest, by device id."""

    devices: dict[PlainName, DeviceEntry] = Field(default_factory=dict)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def load(uri: str) -> DeviceBook:
    """The device book at ``uri`` (empty if there is none)."""
    if not storage.exists(uri):
        return DeviceBook()
    return DeviceBook.model_validate(storage.read_json(uri))


def issue(uri: str, device_id: str) -> str:
    """A new token for ``device_id`` (replacing any it had); only its digest is kept.
    The token is returned once: give it to the device."""
    try:
        plain_name(device_id)
    except ValueError as e:
        raise InputError(f"--device: {e}") from None
    book = load(uri)
    token = f"{PREFIX}.{device_id}.{secrets.token_urlsafe(32)}"
    book.devices[device_id] = DeviceEntry(sha256=_digest(token), issued=_now())
    storage.write_json(uri, book.model_dump())
    return token


def revoke(uri: str, device_id: str) -> DeviceEntry:
    """Revoke ``device_id``'s token; its uploads are refused from the next refresh."""
    book = load(uri)
    entry = book.devices.get(device_id)
    if entry is None:
        raise InputError(f"--device {device_id}: no such device")
    book.devices[device_id] = entry.model_copy(update={"revoked": entry.revoked or _now()})
    storage.write_json(uri, book.model_dump())
    return book.devices[device_id]


def listing(uri: str) -> dict[str, Any]:
    """Each device with when its token was issued and revoked (never the digest)."""
    book = load(uri)
    return {d: {"issued": e.issued, "revoked": e.revoked} for d, e in sorted(book.devices.items())}


@dataclass(frozen=True)
class Verifier:
    """Checks a presented device token against a device book's digests."""

    book: DeviceBook

    def device_of(self, token: str | None) -> str | None:
        """The device a token belongs to; None if it is no valid, unrevoked token."""
        if not token or not token.startswith(f"{PREFIX}."):
            return None
        device_id = token[len(PREFIX) + 1 :].rsplit(".", 1)[0]
        entry = self.book.devices.get(device_id)
        ok = entry is not None and entry.revoked is None
        # compare whatever was found, so that the time does not say whether the id exists
        known = entry.sha256 if entry is not None else "0" * 64
        return device_id if hmac.compare_digest(_digest(token), known) and ok else None
