"""Whom a device trusts, and for how long: signed, versioned, expiring metadata after
TUF's roles (https://theupdateframework.io), the few a fleet of pumps needs.

- ``root`` lists the keys and, per role, which keys sign for it and how many of them
  must (a threshold). A new root is taken only as the next version, signed by a
  threshold of the trusted root's root keys *and* of its own: a key is rotated (or a
  threshold raised) without re-flashing a device, and a stolen non-root key is rotated
  out the same way.
- ``targets`` signs bundles (their manifest: :mod:`pumpfleet.bundle`).
- ``assignment`` signs what each device should run (:mod:`pumpfleet.assignment`).

Everything signed carries a version that only grows and an expiry: a device keeps the
last it trusted and refuses anything older (a replay) or expired (a freeze), and says so.
A device flashed with one public key trusts the *implicit* root, version 0, in which
that key holds every role, so the first rotation is root v1 signed by it.

pydantic and ``cryptography`` (lazily) only: the device imports it.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pumpfleet.errors import BundleError

Role = Literal["root", "targets", "assignment"]
ROLES: tuple[Role, ...] = ("root", "targets", "assignment")
_HEX64 = r"^[0-9a-f]{64}$"


def key_id(public_hex: str) -> str:
    """A public key's id: the first 16 hex digits of the sha256 of its raw bytes."""
    return hashlib.sha256(bytes.fromhex(public_hex.strip())).hexdigest()[:16]


def canonical(obj: Any) -> bytes:
    """The bytes that are signed: JSON with sorted keys and no spaces."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def utc(text: str) -> datetime:
    """An ISO 8601 time (``Z`` or an offset; naive is UTC)."""
    t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def stamp(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class RoleKeys(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    keyids: list[str] = Field(min_length=1)
    threshold: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _reachable(self) -> RoleKeys:
        if self.threshold > len(set(self.keyids)):
            raise ValueError(f"threshold {self.threshold} above its {len(self.keyids)} keys")
        return self


class Root(BaseModel):
    """The root metadata: keys by id (ed25519, hex) and the keys of each role."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["root"] = "root"
    version: int = Field(ge=0)
    expires: str | None = None
    keys: dict[str, str]
    roles: dict[Role, RoleKeys]

    @model_validator(mode="after")
    def _complete(self) -> Root:
        for role in ROLES:
            if role not in self.roles:
                raise ValueError(f"roles: {role} is missing")
            unknown = sorted(set(self.roles[role].keyids) - set(self.keys))
            if unknown:
                raise ValueError(f"roles.{role}: key {unknown[0]} is not in keys")
        for kid, pub in self.keys.items():
            if len(pub) != 64 or key_id(pub) != kid:
                raise ValueError(f"keys.{kid}: not the id of its public key")
        return self

    def role_keys(self, role: Role) -> list[str]:
        """The public keys (hex) that sign for ``role``."""
        return [self.keys[k] for k in self.roles[role].keyids]

    def threshold(self, role: Role) -> int:
        return self.roles[role].threshold


def implicit_root(public_hex: str) -> Root:
    """The root a device flashed with one public key trusts: version 0, that key holding
    every role with a threshold of one, never expiring."""
    pub = public_hex.strip().lower()
    kid = key_id(pub)
    return Root(version=0, keys={kid: pub}, roles={r: RoleKeys(keyids=[kid]) for r in ROLES})


def ed25519_module() -> Any:
    """cryptography's ed25519, or a BundleError saying how to install it."""
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ModuleNotFoundError as e:  # pragma: no cover - install problem
        raise BundleError("signatures need the 'cryptography' package (pumpfleet[edge])") from e
    return ed25519


def public_hex(private_key: Any) -> str:
    from cryptography.hazmat.primitives import serialization

    raw = private_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return str(raw.hex())


def signatures(body: bytes, private_keys: list[Any]) -> list[dict[str, str]]:
    """``[{"keyid", "sig"}]``: each key's signature of ``body``."""
    return [{"keyid": key_id(public_hex(k)), "sig": k.sign(body).hex()} for k in private_keys]


def sign(signed: dict[str, Any], private_keys: list[Any]) -> dict[str, Any]:
    """``{"signed": ..., "signatures": [{"keyid", "sig"}]}``, one signature per key."""
    return {"signed": signed, "signatures": signatures(canonical(signed), private_keys)}


def count_valid(body: bytes, signatures: list[tuple[str | None, bytes]], keys: list[str]) -> int:
    """How many of ``keys`` (hex) signed ``body``: each key counted once, whatever the
    signatures claim to be (a key id only says which key to try first)."""
    ed25519 = ed25519_module()
    from cryptography.exceptions import InvalidSignature

    valid: set[str] = set()
    for pub in keys:
        for claimed, sig in signatures:
            if claimed is not None and claimed != key_id(pub):
                continue
            try:
                ed25519.Ed25519PublicKey.from_public_bytes(bytes.fromhex(pub)).verify(sig, body)
            except (InvalidSignature, ValueError):
                continue
            valid.add(pub)
            break
    return len(valid)


def verify(envelope: Any, keys: list[str], threshold: int, what: str) -> dict[str, Any]:
    """The ``signed`` part of an envelope signed by at least ``threshold`` of ``keys``;
    BundleError (naming ``what``) otherwise."""
    if (
        not isinstance(envelope, dict)
        or not isinstance(envelope.get("signed"), dict)
        or not isinstance(envelope.get("signatures"), list)
    ):
        raise BundleError(f"{what}: not signed metadata ({{'signed', 'signatures'}})")
    sigs: list[tuple[str | None, bytes]] = []
    for s in envelope["signatures"]:
        try:
            sigs.append((str(s["keyid"]), bytes.fromhex(str(s["sig"]))))
        except (KeyError, TypeError, ValueError):
            raise BundleError(f"{what}: a signature is not {{'keyid', 'sig'}} in hex") from None
    n = count_valid(canonical(envelope["signed"]), sigs, keys)
    if n < threshold:
        raise BundleError(f"{what}: signed by {n} trusted key(s), {threshold} needed")
    return dict(envelope["signed"])


def parse_root(signed: Any, where: str = "root") -> Root:
    try:
        return Root.model_validate(signed)
    except ValidationError as e:
        first = e.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "root"
        raise BundleError(f"{where}: {field}: {first['msg']}") from None


def next_root(trusted: Root, envelope: Any) -> Root:
    """The root that follows ``trusted``: version + 1, signed by a threshold of the
    trusted root's root keys and of its own (TUF's rule); BundleError otherwise."""
    signed = envelope.get("signed") if isinstance(envelope, dict) else None
    version = signed.get("version") if isinstance(signed, dict) else None
    what = f"root v{version}"
    new = parse_root(signed, what)
    if new.version != trusted.version + 1:
        raise BundleError(
            f"{what}: not the next root after v{trusted.version} (roots are taken in turn)"
        )
    verify(envelope, trusted.role_keys("root"), trusted.threshold("root"), f"{what} (old keys)")
    verify(envelope, new.role_keys("root"), new.threshold("root"), f"{what} (its own keys)")
    return new


def stale(
    what: str,
    version: int,
    expires: str | None,
    last_version: int | None,
    now: datetime,
) -> str | None:
    """Why metadata (``what`` v``version``, expiring at ``expires``) may not be trusted
    after the last version trusted, or None: expired (a freeze) or older (a replay)."""
    if expires is not None and utc(expires) <= now:
        return f"{what} v{version} expired at {expires}"
    if last_version is not None and version < last_version:
        return f"{what} v{version} is older than v{last_version}, the last this device trusted"
    return None
