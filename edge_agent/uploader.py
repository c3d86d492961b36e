"""Upload to the cloud: one POST per batch, with its idempotency key, over the standard
library's HTTP client; reconnects with exponential backoff.

    POST <endpoint>/v1/edge/upload   X-API-Key: <key>
    {"device_id": ..., "batch_key": ..., "records": [...], "health": {...}}

HTTP 200 with ``{"stored": n, "duplicate": bool}`` acknowledges the batch (a duplicate
is a batch the cloud already had: acknowledged too).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from pumpfleet.errors import PumpfleetError

PATH = "/v1/edge/upload"
API_KEY_HEADER = "X-API-Key"


class UploadError(PumpfleetError):
    """The cloud did not acknowledge a batch (unreachable, refused, or an odd answer)."""


def backoff(failures: int, base: float, cap: float, jitter: float) -> float:
    """Seconds to wait after ``failures`` failures in a row: doubling from ``base`` up to
    ``cap``, times a jitter factor from ``jitter`` in [0, 1) (so that a fleet coming back
    online does not reconnect all at once)."""
    if failures <= 0:
        return 0.0
    delay = min(cap, base * 2 ** min(failures - 1, 30))
    return float(delay * (0.5 + 0.5 * jitter))


@dataclass
class Uploader:
    endpoint: str
    api_key: str | None
    device_id: str
    timeout: float = 10.0

    def post(
        self, batch_key: str, records: list[dict[str, Any]], health: dict[str, Any]
    ) -> dict[str, Any]:
        body = json.dumps(
            {
                "device_id": self.device_id,
                "batch_key": batch_key,
                "records": records,
                "health": health,
            },
            separators=(",", ":"),
        ).encode()
        req = urllib.request.Request(
            self.endpoint + PATH,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", API_KEY_HEADER: self.api_key or ""},
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                status, text = resp.status, resp.read()
        except urllib.error.HTTPError as e:
            raise UploadError(f"upload {batch_key}: HTTP {e.code}") from None
        except (urllib.error.URLError, OSError) as e:
            raise UploadError(f"upload {batch_key}: {getattr(e, 'reason', e)}") from None
        if status != 200:
            raise UploadError(f"upload {batch_key}: HTTP {status}")
        try:
            answer = json.loads(text)
            ack = {"stored": int(answer["stored"]), "duplicate": bool(answer["duplicate"])}
        except (ValueError, KeyError, TypeError):
            raise UploadError(f"upload {batch_key}: not an acknowledgement") from None
        return ack
