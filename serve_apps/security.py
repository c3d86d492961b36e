"""API keys for scoring and the admin token: where they come from, and how a request's
credential is checked.

Keys come from the settings (:class:`pumpfleet.settings.Settings`), that is from the
environment (``PUMPFLEET_API_KEYS``, comma-separated; ``PUMPFLEET_ADMIN_TOKEN``) or from
secret files (``PUMPFLEET_API_KEYS_FILE``, one key per line;
``PUMPFLEET_ADMIN_TOKEN_FILE``), e.g. mounted Kubernetes secrets. Only their
sha256 digests reach the Serve application's config, so no key appears in Serve's config,
its dashboard or a log; a presented key is hashed and compared with every digest in
constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from pumpfleet.errors import InputError
from pumpfleet.settings import Settings, get_settings

API_KEY_HEADER = "x-api-key"
API_KEYS = "PUMPFLEET_API_KEYS"
ADMIN_TOKEN = "PUMPFLEET_ADMIN_TOKEN"
MIN_KEY_LENGTH = 16


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def keys_from(
    value: str | None, path: str | Path | None, name: str, split_commas: bool
) -> list[str]:
    """The keys in ``value`` and in the file at ``path`` (the variable ``name`` and its
    ``_FILE``, named in errors); several per value (comma-separated) and per file (one a
    line) with ``split_commas``."""
    values: list[str] = []
    if value:
        values += value.split(",") if split_commas else [value]
    if path:
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise InputError(f"{name}_FILE={path}: {e.strerror or e}") from None
        values += text.splitlines() if split_commas else [text]
    keys = [v.strip() for v in values if v.strip()]
    short = [k for k in keys if len(k) < MIN_KEY_LENGTH]
    if short:
        raise InputError(f"{name}: every key must have at least {MIN_KEY_LENGTH} characters")
    return keys


def credentials(
    env: Mapping[str, str] | None = None, settings: Settings | None = None
) -> tuple[list[str], list[str]]:
    """The scoring keys and the admin tokens themselves: from ``settings``
    (:func:`get_settings` by default), or from ``env``, a mapping of the same variables
    (tests)."""
    if env is not None:
        return (
            keys_from(env.get(API_KEYS), env.get(f"{API_KEYS}_FILE"), API_KEYS, True),
            keys_from(env.get(ADMIN_TOKEN), env.get(f"{ADMIN_TOKEN}_FILE"), ADMIN_TOKEN, False),
        )
    s = settings or get_settings()
    return (
        keys_from(s.api_keys, s.api_keys_file, API_KEYS, True),
        keys_from(s.admin_token, s.admin_token_file, ADMIN_TOKEN, False),
    )


@dataclass(frozen=True)
class Secrets:
    """Digests of the scoring keys and of the admin tokens."""

    api_keys: tuple[str, ...]
    admin_tokens: tuple[str, ...]


def load_secrets(env: Mapping[str, str] | None = None, settings: Settings | None = None) -> Secrets:
    """The digests of the keys :func:`credentials` finds."""
    keys, tokens = credentials(env, settings)
    return Secrets(
        api_keys=tuple(digest(k) for k in keys), admin_tokens=tuple(digest(k) for k in tokens)
    )


def new_key() -> str:
    return secrets.token_urlsafe(24)


class Access(Enum):
    OK = 200
    MISSING = 401  # no credential, or one that matches nothing
    FORBIDDEN = 403  # a valid scoring key on an admin route


def matches(presented: str | None, digests: Iterable[str]) -> bool:
    """Whether ``presented`` is one of the keys whose sha256 ``digests`` are given."""
    if not presented:
        return False
    d = digest(presented)
    found = False
    for known in digests:  # no early exit: the time does not say which key matched
        found |= hmac.compare_digest(d, known)
    return found


def check_scoring(api_key: str | None, keys: Iterable[str], insecure: bool) -> Access:
    if insecure:
        return Access.OK
    return Access.OK if matches(api_key, keys) else Access.MISSING


def check_admin(
    authorization: str | None,
    api_key: str | None,
    admin_tokens: Iterable[str],
    api_keys: Iterable[str],
    insecure: bool,
) -> Access:
    if insecure:
        return Access.OK
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() == "bearer" and matches(token.strip(), admin_tokens):
        return Access.OK
    if matches(api_key, api_keys) or matches(token.strip(), api_keys):
        return Access.FORBIDDEN
    return Access.MISSING
