"""The edge bundle: one signed file per (pump class, RUL model version, anomaly model
version or none), named by :class:`BundleId`.

A bundle is a tar archive holding the model (ONNX), the feature spec, golden windows and
a manifest (:class:`pumpfleet.manifest.BundleManifest`, the typed contract) listing the
sha256 of every member, signed with ed25519. A device verifies the signature, the
manifest's contract and every hash before it switches to a bundle.

Imports only the standard library, pydantic and ``cryptography``: it runs on the device.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pumpfleet import trust
from pumpfleet.errors import BundleError
from pumpfleet.manifest import FORMAT, MANIFEST, SIGNATURE, SIGNATURES, BundleManifest
from pumpfleet.names import plain_name

SUFFIX = ".pfbundle"


@dataclass(frozen=True)
class Bundle:
    manifest: BundleManifest
    members: dict[str, bytes]


_ID = re.compile(r"v(\d+)(?:-anomaly-v(\d+))?")


@dataclass(frozen=True)
class BundleId:
    """Which models a bundle carries: its RUL model version and its anomaly (health) model
    version, None in a bundle without one. Written ``v<N>`` or ``v<N>-anomaly-v<M>``, as
    in the bundle's file name."""

    rul: int
    anomaly: int | None = None

    @classmethod
    def of(cls, manifest: BundleManifest) -> BundleId:
        """The id of a bundle from its manifest (``model_version``, ``anomaly.version``)."""
        found = manifest.anomaly
        return cls(int(manifest.model_version), int(found.version) if found else None)

    @classmethod
    def parse(cls, text: str) -> BundleId:
        m = _ID.fullmatch(text)
        if m is None:
            raise BundleError(f"{text!r} is not a bundle id (v<N> or v<N>-anomaly-v<M>)")
        return cls(int(m[1]), int(m[2]) if m[2] else None)

    def __str__(self) -> str:
        return f"v{self.rul}" if self.anomaly is None else f"v{self.rul}-anomaly-v{self.anomaly}"


def load_or_create_key(path: Path) -> Any:
    """The ed25519 private key at ``path`` (PEM); a new one is made if none is there."""
    from cryptography.hazmat.primitives import serialization

    ed25519 = trust.ed25519_module()
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise BundleError(f"{path} is not an ed25519 private key")
        return key
    key = ed25519.Ed25519PrivateKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public_key_path(path).write_text(public_key_hex(key) + "\n")
    return key


def public_key_path(private_key: Path) -> Path:
    return private_key.with_suffix(".pub")


def public_key_hex(private_key: Any) -> str:
    """The hex of an ed25519 private key's public half (what devices are given)."""
    return trust.public_hex(private_key)


def _canonical(manifest: dict[str, Any]) -> bytes:
    return json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()


def write_bundle(
    path: Path,
    members: dict[str, bytes],
    meta: dict[str, Any],
    private_key: Any,
    more_keys: Sequence[Any] = (),
) -> BundleManifest:
    """Write a signed bundle of ``members`` whose manifest has the fields ``meta``; returns
    the manifest. A manifest that breaks the contract is never written. ``more_keys``
    sign it too (``manifest.sigs``), for a targets role with a threshold above one."""
    for reserved in (MANIFEST, SIGNATURE, SIGNATURES):
        if reserved in members:
            raise BundleError(f"{reserved} is reserved in a bundle")
    unknown = sorted(set(meta) - set(BundleManifest.model_fields))
    if unknown:
        raise BundleError(f"manifest: {unknown[0]}: not a field of the bundle manifest")
    manifest = BundleManifest.parse(
        {
            "format": FORMAT,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **meta,
            "members": {name: hashlib.sha256(data).hexdigest() for name, data in members.items()},
        }
    )
    body = _canonical(manifest.to_json_object())
    signature = private_key.sign(body)
    signed = [(MANIFEST, body), (SIGNATURE, signature)]
    if more_keys:
        extra = trust.signatures(body, list(more_keys))
        signed.append((SIGNATURES, json.dumps(extra).encode()))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tarfile.open(tmp, "w") as tar:
        for name, data in [*signed, *sorted(members.items())]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    tmp.replace(path)
    return manifest


def read_bundle(path: Path, public_key_hex_: str | Sequence[str], threshold: int = 1) -> Bundle:
    """Read and verify a bundle: signed by ``threshold`` of the given public keys (one
    key, or a role's keys: :mod:`pumpfleet.trust`), then every member's sha256 against
    the manifest. Raises BundleError on any mismatch."""

    trust.ed25519_module()
    try:
        with tarfile.open(path, "r") as tar:
            files = {}
            for m in tar.getmembers():
                if not m.isfile():
                    raise BundleError(f"{path.name}: member {m.name} is not a plain file")
                f = tar.extractfile(m)
                assert f is not None
                files[m.name] = f.read()
    except (tarfile.TarError, OSError) as e:
        # tarfile's message lists every compression it tried, one per line: one line here
        why = str(e).splitlines()[0].rstrip(": ") if str(e) else type(e).__name__
        if isinstance(e, tarfile.ReadError):
            why = "not a tar archive"
        raise BundleError(f"{path.name}: not a readable bundle ({why})") from None
    if MANIFEST not in files or SIGNATURE not in files:
        raise BundleError(f"{path.name}: manifest or signature missing")
    for name in files:
        try:
            plain_name(name)
        except ValueError as e:
            raise BundleError(f"{path.name}: member {e}") from None
    keys = [public_key_hex_] if isinstance(public_key_hex_, str) else list(public_key_hex_)
    signatures: list[tuple[str | None, bytes]] = [(None, files[SIGNATURE])]
    if SIGNATURES in files:
        try:
            signatures += [
                (str(s["keyid"]), bytes.fromhex(s["sig"])) for s in json.loads(files[SIGNATURES])
            ]
        except (ValueError, KeyError, TypeError):
            raise BundleError(f"{path.name}: {SIGNATURES} is not a list of signatures") from None
    valid = trust.count_valid(files[MANIFEST], signatures, [k.strip() for k in keys])
    if valid < threshold:
        if threshold == 1:
            raise BundleError(f"{path.name}: signature does not verify")
        raise BundleError(f"{path.name}: signed by {valid} trusted key(s), {threshold} needed")
    try:
        data = json.loads(files[MANIFEST])
    except ValueError as e:
        raise BundleError(f"{path.name}: the manifest is not JSON ({e})") from None
    manifest = BundleManifest.parse(data, f"{path.name}: manifest")
    members = {k: v for k, v in files.items() if k not in (MANIFEST, SIGNATURE, SIGNATURES)}
    if set(members) != set(manifest.members):
        raise BundleError(f"{path.name}: members differ from the manifest")
    for name, digest in manifest.members.items():
        if hashlib.sha256(members[name]).hexdigest() != digest:
            raise BundleError(f"{path.name}: {name} does not match its sha256")
    return Bundle(manifest=manifest, members=members)
