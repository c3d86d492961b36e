"""The cloud's side of the trust root (:mod:`pumpfleet.trust`): the chain of signed roots
under ``<workspace>/trust/root-<N>.json``, and rotating a role's keys by writing the next
root, signed by a threshold of the current root's root keys and of its own.

Before the first rotation the fleet trusts the implicit root of the bundle signing key
(version 0), which every device flashed with that public key trusts already; devices
take newer roots from their assignment pulls (``roots``) or from ``*.root.json`` files in
their updates folder.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pumpfleet import storage, trust
from pumpfleet.errors import InputError

FOLDER = "trust"
ROOT_EXPIRES_DAYS = 365.0
_FILE = re.compile(r"root-(\d+)\.json")


def folder(home: Path) -> Path:
    return Path(home) / FOLDER


def chain(home: Path) -> list[dict[str, Any]]:
    """Every signed root written here, oldest first."""
    found = []
    base = folder(home)
    if base.is_dir():
        for p in base.iterdir():
            m = _FILE.fullmatch(p.name)
            if m:
                found.append((int(m[1]), json.loads(p.read_text())))
    return [env for _, env in sorted(found, key=lambda x: x[0])]


def current(home: Path, signing_public: str) -> trust.Root:
    """The newest root here, else the implicit root of the bundle signing key."""
    roots = chain(home)
    if not roots:
        return trust.implicit_root(signing_public)
    return trust.parse_root(roots[-1]["signed"])


def after(home: Path, version: int) -> list[dict[str, Any]]:
    """The signed roots newer than ``version``: what a device holding it needs."""
    return [env for env in chain(home) if int(env["signed"]["version"]) > version]


def keys_for(root: trust.Root, role: trust.Role, private_keys: list[Any]) -> list[Any]:
    """Those of ``private_keys`` that sign for ``role`` in ``root``."""
    ids = set(root.roles[role].keyids)
    return [k for k in private_keys if trust.key_id(trust.public_hex(k)) in ids]


def rotate(
    home: Path,
    signing_public: str,
    held: list[Any],
    new_keys: dict[trust.Role, list[Any]],
    thresholds: dict[trust.Role, int] | None = None,
    expires_days: float = ROOT_EXPIRES_DAYS,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Write the next root: ``new_keys`` replace the keys of their roles (with
    ``thresholds``), signed by the current root's root keys among ``held`` (private keys)
    and by the new root's own. InputError where the keys in hand cannot reach a
    threshold. Returns the signed root."""
    old = current(home, signing_public)
    roles = {r: old.roles[r] for r in trust.ROLES}
    keys = dict(old.keys)
    for role, privs in new_keys.items():
        if not privs:
            raise InputError(f"--role {role}: no key given")
        pubs = [trust.public_hex(k) for k in privs]
        keys |= {trust.key_id(p): p for p in pubs}
        need = (thresholds or {}).get(role, 1)
        roles[role] = trust.RoleKeys(keyids=[trust.key_id(p) for p in pubs], threshold=need)
    used = {k for r in roles.values() for k in r.keyids}
    signed_root = trust.Root(
        version=old.version + 1,
        expires=trust.stamp((now or datetime.now(UTC)) + timedelta(days=expires_days)),
        keys={k: v for k, v in keys.items() if k in used},
        roles=roles,
    )
    old_signers = keys_for(old, "root", held)
    if len(old_signers) < old.threshold("root"):
        raise InputError(
            f"root v{old.version} needs {old.threshold('root')} of its root keys to sign the "
            f"next, {len(old_signers)} given (--sign-with)"
        )
    new_signers = keys_for(signed_root, "root", [*held, *(k for v in new_keys.values() for k in v)])
    signers = {trust.key_id(trust.public_hex(k)): k for k in [*old_signers, *new_signers]}
    envelope = trust.sign(signed_root.model_dump(mode="json"), list(signers.values()))
    trust.next_root(old, envelope)  # what every device will check
    storage.write_json(folder(home) / f"root-{signed_root.version}.json", envelope)
    return envelope
