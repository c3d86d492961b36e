"""The cloud side of edge uploads: a batch of edge predictions stored once per
idempotency key, where monitoring reads the prediction log.

``store_upload`` writes ``<root>/edge/<device_id>/<batch_key>.parquet`` through a
temporary file and ``os.link``, which fails if the name exists: of two replicas racing
with the same batch, one stores it and the other answers "duplicate". ``root`` is the
prediction log's folder, so :func:`pumpfleet.predlog.read_log` reads edge rows beside the
service's. Rows carry the prediction log's columns (``arm`` is ``edge``; ``health_score``,
``anomaly`` and ``anomaly_version`` null where the class has no health model) plus
``device_id``, ``alert`` and ``variant``.

The HTTP route (in the Serve app) passes the request body to :func:`handle_upload`.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from pumpfleet.errors import InputError, one_line

_NAME = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
MAX_RECORDS = 10_000
# Columns of a prediction-log row (serve_apps/scoring.py) and their Arrow types; other
# columns (in_<channel>, device_id, alert, variant) are typed from their values.
_FLOAT = ("rul_hours", "failure_probability", "latency_ms")
_OPTIONAL = ("shadow_version", "shadow_rul_hours", "shadow_failure_probability")
# The health (anomaly) model's columns, null where a class has none: typed as the
# service logs them, so a batch of nulls reads like one with scores.
_HEALTH = {"health_score": "float64", "anomaly": "bool_", "anomaly_version": "string"}


class EdgeUpload(BaseModel):
    """The body of ``POST /v1/edge/upload``."""

    device_id: str = Field(pattern=_NAME.pattern)
    batch_key: str = Field(pattern=_NAME.pattern)
    records: list[dict[str, Any]] = Field(max_length=MAX_RECORDS)
    health: dict[str, Any] | None = None


def _table(records: list[dict[str, Any]], device_id: str) -> Any:
    import pyarrow as pa

    rows = []
    for i, r in enumerate(records):
        for need in ("request_id", "timestamp", "pump_id", "model_version"):
            if need not in r:
                raise InputError(f"records.{i}.{need}: required")
        rows.append({**r, "device_id": device_id, "arm": r.get("arm", "edge")})
    try:
        table = pa.Table.from_pylist(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as e:
        raise InputError(f"records: {e}") from None
    fields = []
    for f in table.schema:
        if f.name == "timestamp":
            fields.append(pa.field("timestamp", pa.timestamp("ns")))
        elif f.name in _FLOAT:
            fields.append(pa.field(f.name, pa.float64()))
        elif f.name in _OPTIONAL and pa.types.is_null(f.type):
            kind = pa.string() if f.name == "shadow_version" else pa.float64()
            fields.append(pa.field(f.name, kind))
        elif f.name in _HEALTH:
            fields.append(pa.field(f.name, getattr(pa, _HEALTH[f.name])()))
        elif f.name.startswith("in_"):
            fields.append(pa.field(f.name, pa.float64()))
        else:
            fields.append(f)
    try:
        return table.cast(pa.schema(fields))
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise InputError(f"records: {e}") from None


def store_upload(
    root: Path, device_id: str, batch_key: str, records: list[dict[str, Any]]
) -> dict[str, Any]:
    """Store a batch of edge records once per ``(device_id, batch_key)``; returns
    ``{"stored": n, "duplicate": bool}`` (a duplicate stores nothing)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for what, name in (("device_id", device_id), ("batch_key", batch_key)):
        if not _NAME.match(name):
            raise InputError(f"{what}: must be 1-128 of A-Z a-z 0-9 . _ -, got {name!r}")
    folder = Path(root) / "edge" / device_id
    dest = folder / f"{batch_key}.parquet"
    if dest.exists():
        return {"stored": 0, "duplicate": True}
    if not records:
        return {"stored": 0, "duplicate": False}
    table = _table(records, device_id)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{batch_key}.{uuid.uuid4().hex}.tmp"
    try:
        try:
            pq.write_table(table, tmp)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as e:
            raise InputError(f"records: not storable as Parquet ({e})") from None
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        try:
            os.link(tmp, dest)  # atomic, and fails if another writer got there first
        except FileExistsError:
            return {"stored": 0, "duplicate": True}
    finally:
        tmp.unlink(missing_ok=True)
    return {"stored": len(records), "duplicate": False}


def store_health(root: Path, device_id: str, health: dict[str, Any]) -> None:
    """The device's latest health report, ``<root>/edge/<device_id>/health.json``."""
    folder = Path(root) / "edge" / device_id
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".health.{uuid.uuid4().hex}.tmp"
    tmp.write_text(json.dumps(health, indent=2, default=str))
    os.replace(tmp, folder / "health.json")


def handle_upload(root: Path, body: dict[str, Any]) -> dict[str, Any]:
    """Validate an upload body, store its batch once and its health report; the answer
    for HTTP 200. InputError (→ 4xx) on a bad body."""
    try:
        up = EdgeUpload.model_validate(body)
    except ValidationError as e:
        raise InputError(one_line(e)) from None
    answer = store_upload(root, up.device_id, up.batch_key, up.records)
    if up.health is not None:
        store_health(root, up.device_id, up.health)
    return answer
