"""The cloud side of edge uploads: a batch of edge predictions stored once per
idempotency key, where monitoring reads the prediction log.

``store_upload`` writes ``<root>/edge/<device_id>/<batch_key>.parquet`` once
(:func:`pumpfleet.storage.write_once`: a hard link locally, a conditional PUT on S3),
which fails if the name exists: of two replicas racing with the same batch, one stores it
and the other answers "duplicate". ``root`` is the prediction log's folder or URI, so
:func:`pumpfleet.predlog.read_log` reads edge rows beside the service's. Each record is a
:class:`pumpfleet.records.PredictionRecord` (``arm`` is ``edge``), stored with the
prediction log's Arrow schema and its ``device_id``.

The HTTP route (in the Serve app) passes the request body to :func:`handle_upload`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from pumpfleet import storage
from pumpfleet.errors import ConflictError, InputError, one_line
from pumpfleet.names import PlainName, plain_name
from pumpfleet.records import PredictionRecord, rows_to_table

MAX_RECORDS = 10_000


class EdgeUpload(BaseModel):
    """The body of ``POST /v1/edge/upload``: a batch of the device's prediction records."""

    device_id: PlainName
    batch_key: PlainName
    records: list[PredictionRecord] = Field(max_length=MAX_RECORDS)
    health: dict[str, Any] | None = None


DIGEST_KEY = b"pumpfleet.batch_sha256"


def batch_digest(records: list[PredictionRecord]) -> str:
    """What a batch holds, as a sha256 of its records' canonical JSON."""
    body = json.dumps([r.model_dump(mode="json") for r in records], sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()


def _table(records: list[PredictionRecord], device_id: str) -> Any:
    """The batch as the prediction log's table, every row marked with its device and
    the batch's digest in the file's metadata."""
    rows = [{**r.model_dump(), "device_id": device_id} for r in records]
    table = rows_to_table(rows)
    return table.replace_schema_metadata({DIGEST_KEY: batch_digest(records).encode()})


def _again(dest: str, batch_key: str, records: list[PredictionRecord]) -> dict[str, Any]:
    """A batch key seen before: a duplicate if it carries the same records (a retry after
    a lost acknowledgement), a ConflictError if other records (a replay or a bug)."""
    import pyarrow.parquet as pq

    fs, path = storage.resolve(dest)
    stored = (pq.read_schema(path, filesystem=fs).metadata or {}).get(DIGEST_KEY)
    if stored is not None and stored.decode() != batch_digest(records):
        raise ConflictError(f"batch_key {batch_key} was stored before with other records")
    return {"stored": 0, "duplicate": True}


def store_upload(
    root: str | Path, device_id: str, batch_key: str, records: list[PredictionRecord]
) -> dict[str, Any]:
    """Store a batch of edge records once per ``(device_id, batch_key)``; returns
    ``{"stored": n, "duplicate": bool}`` (a duplicate stores nothing; the same key with
    other records is a ConflictError)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for what, name in (("device_id", device_id), ("batch_key", batch_key)):
        try:
            plain_name(name)
        except ValueError as e:
            raise InputError(f"{what}: {e}") from None
    dest = storage.join(str(root), "edge", device_id, f"{batch_key}.parquet")
    if storage.exists(dest):
        return _again(dest, batch_key, records)
    if not records:
        return {"stored": 0, "duplicate": False}
    table = _table(records, device_id)
    sink = pa.BufferOutputStream()
    try:
        pq.write_table(table, sink)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as e:
        raise InputError(f"records: not storable as Parquet ({e})") from None
    if not storage.write_once(dest, sink.getvalue().to_pybytes()):
        return _again(dest, batch_key, records)
    return {"stored": len(records), "duplicate": False}


def store_health(root: str | Path, device_id: str, health: dict[str, Any]) -> None:
    """The device's latest health report, ``<root>/edge/<device_id>/health.json``."""
    uri = storage.join(str(root), "edge", device_id, "health.json")
    storage.write_bytes(uri, json.dumps(health, indent=2, default=str).encode())


def handle_upload(root: str | Path, body: dict[str, Any]) -> dict[str, Any]:
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
