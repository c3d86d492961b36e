"""Webhooks of alert events: signed, delivered at least once from the durable outbox
(:data:`pumpfleet.fleet_schema.outbox`, filled by :mod:`pumpfleet.fleet_store` in the
transaction of the change), retried with exponential back-off.

Each POST carries the event's JSON body (its ``id`` the same on every retry and every
URL, for receivers to de-duplicate) and two headers::

    X-Pumpfleet-Timestamp: <unix seconds>
    X-Pumpfleet-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>" with the secret>

A receiver checks it with :func:`verify` (or the same four lines in its own language).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from pumpfleet.fleet_schema import outbox

log = logging.getLogger(__name__)

TIMESTAMP = "X-Pumpfleet-Timestamp"
SIGNATURE = "X-Pumpfleet-Signature"
EVENT_ID = "X-Pumpfleet-Event-Id"

# (url, body, headers, timeout seconds) -> HTTP status; raises OSError when unreachable
Post = Callable[[str, bytes, dict[str, str], float], int]


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header's value of ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def verify(
    secret: str, timestamp: str, body: bytes, signature: str, now: float, tolerance: float = 300
) -> bool:
    """Whether ``signature`` is the secret's over this body and timestamp, sent within
    ``tolerance`` seconds of ``now`` (an old signed body replayed is refused)."""
    try:
        fresh = abs(now - float(timestamp)) <= tolerance
    except ValueError:
        return False
    return fresh and hmac.compare_digest(sign(secret, timestamp, body), signature)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Seconds before retry ``n`` (1 = the first retry): ``base * 2**(n-1)``, at most
    ``cap``; a sending replica holds a row ``lease`` seconds (another takes it after)."""

    base: float = 1.0
    cap: float = 300.0
    lease: float = 30.0

    def delay(self, attempts: int) -> float:
        return float(min(self.cap, self.base * 2 ** max(0, attempts - 1)))


def http_post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
    """POST by the standard library; the status (4xx and 5xx too)."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def _claim(engine: sa.Engine, now: float, lease: float, limit: int) -> list[Any]:
    """Due rows, each held for ``lease`` seconds so that another replica's sender does
    not take it meanwhile (it will after, if this one dies while sending)."""
    o = outbox.c
    with engine.begin() as conn:
        q = (
            sa.select(o.id, o.event_id, o.url, o.body, o.attempts)
            .where(o.delivered_at.is_(None), o.next_attempt_at <= now)
            .order_by(o.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        rows = list(conn.execute(q))
        if rows:
            conn.execute(
                outbox.update()
                .where(o.id.in_([r.id for r in rows]))
                .values(next_attempt_at=now + lease)
            )
    return rows


def deliver_due(
    engine: sa.Engine,
    secret: str,
    now: float,
    post: Post = http_post,
    backoff: Backoff | None = None,
    timeout: float = 5.0,
    limit: int = 50,
) -> tuple[int, int]:
    """Send the outbox's due events once each: delivered on a 2xx, else retried after
    the back-off. Returns (delivered, failed)."""
    backoff = backoff or Backoff()
    sent = failed = 0
    for row in _claim(engine, now, backoff.lease, limit):
        timestamp = str(int(now))
        body = row.body.encode()
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP: timestamp,
            SIGNATURE: sign(secret, timestamp, body),
            EVENT_ID: row.event_id,
        }
        error: str | None = None
        try:
            status = post(row.url, body, headers, timeout)
            if not 200 <= status < 300:
                error = f"HTTP {status}"
        except (OSError, ValueError) as e:  # refused, timed out, a malformed URL
            error = f"{type(e).__name__}: {e}"
        with engine.begin() as conn:
            where = outbox.c.id == row.id
            if error is None:
                conn.execute(
                    outbox.update().where(where).values(delivered_at=now, attempts=row.attempts + 1)
                )
                sent += 1
            else:
                attempts = row.attempts + 1
                conn.execute(
                    outbox.update()
                    .where(where)
                    .values(
                        attempts=attempts,
                        next_attempt_at=now + backoff.delay(attempts),
                        last_error=error[:500],
                    )
                )
                log.warning(
                    "webhook %s to %s failed (%s); retry %d", row.event_id, row.url, error, attempts
                )
                failed += 1
    return sent, failed


def pending(engine: sa.Engine) -> int:
    """Events not yet delivered (per URL)."""
    q = sa.select(sa.func.count()).select_from(outbox).where(outbox.c.delivered_at.is_(None))
    with engine.connect() as conn:
        return int(conn.execute(q).scalar_one())
