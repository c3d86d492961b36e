"""A device's assignment: which bundle it should run, signed by the trust root's
``assignment`` role (:mod:`pumpfleet.trust`), versioned and expiring. The cloud issues
it (:mod:`pumpfleet.fleet_devices`); the device pulls it (so it works through NAT and
intermittent links), checks it and acts on it.

pydantic only (and ``cryptography`` through :mod:`pumpfleet.trust`): the device imports it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pumpfleet import trust
from pumpfleet.errors import BundleError
from pumpfleet.names import PlainName


class Assignment(BaseModel):
    """What one device should run. ``bundle`` None: whatever it runs now."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["assignment"] = "assignment"
    device_id: PlainName
    pump_class: str | None = None
    # Grows with every change of any rollout (the cloud's rollout serial).
    version: int = Field(ge=1)
    expires: str
    bundle: str | None = Field(default=None, pattern=r"^v\d+(-anomaly-v\d+)?$")
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    release: int | None = None
    # Where to fetch the bundle: a path under the endpoint the device uploads to.
    url: str | None = Field(default=None, pattern=r"^/[A-Za-z0-9._/-]{1,300}$")
    rollout: str | None = None
    wave: int | None = None
    # The bundle is the one the device ran before (its rollout was halted): go back to
    # it though it is older.
    rollback: bool = False


def sign(assignment: Assignment, private_keys: list[Any]) -> dict[str, Any]:
    return trust.sign(assignment.model_dump(mode="json"), private_keys)


def accept(
    envelope: Any,
    root: trust.Root,
    device_id: str,
    last: tuple[int, str] | None,
    now: datetime,
) -> Assignment:
    """The assignment in ``envelope`` if it may be trusted: signed by a threshold of the
    root's assignment keys, for this device, not expired, and not older than ``last``
    (the version and expiry of the last one trusted: an equal version must not expire
    earlier). BundleError saying why otherwise."""
    signed = trust.verify(
        envelope, root.role_keys("assignment"), root.threshold("assignment"), "assignment"
    )
    try:
        a = Assignment.model_validate(signed)
    except ValidationError as e:
        first = e.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "assignment"
        raise BundleError(f"assignment: {field}: {first['msg']}") from None
    if a.device_id != device_id:
        raise BundleError(f"assignment v{a.version} is for {a.device_id}, not this device")
    why = trust.stale("assignment", a.version, a.expires, last[0] if last else None, now)
    earlier = last is not None and trust.utc(a.expires) < trust.utc(last[1])
    if why is None and last is not None and a.version == last[0] and earlier:
        why = f"assignment v{a.version} expires before the copy of it this device has"
    if why:
        raise BundleError(why)
    return a
