"""Checking input files before Ray reads them: an unreadable or wrong-schema file is set
aside with its reason, and the rest goes on."""

from __future__ import annotations

from dataclasses import dataclass

from pumpfleet import storage
from pumpfleet.schema import FleetSchema

# Columns that every readings file must hold, as the type family they must have. The
# class comes from the partition path (pump_class=<c>/), so a file need not repeat it.
_KEYS = {"pump_id": "string", "site": "string", "timestamp": "timestamp"}


@dataclass(frozen=True)
class RejectedFile:
    path: str
    reason: str
    rows: int | None  # None when the file is too damaged to say

    def as_dict(self) -> dict[str, object]:
        return {"path": self.path, "reason": self.reason, "rows": self.rows}


def _family(arrow_type: object) -> str:
    import pyarrow as pa

    t = arrow_type
    if isinstance(t, pa.DictionaryType):
        t = t.value_type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_timestamp(t):
        return "timestamp"
    if pa.types.is_floating(t) or pa.types.is_integer(t):
        return "number"
    if pa.types.is_null(t):
        return "null"
    return str(t)


def check_file(path: str, fs: object, fleet: FleetSchema) -> tuple[int, str | None]:
    """(rows, None) for a file Ray can read as readings, else (rows or -1, reason)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(path, filesystem=fs).metadata  # reads the footer
    except (pa.ArrowException, OSError) as e:
        return -1, f"unreadable: {str(e)[:200]}"
    schema = meta.schema.to_arrow_schema()
    expected = {**_KEYS, **{c: "number" for c in (*fleet.settings, *fleet.channels)}}
    for name, family in expected.items():
        if name not in schema.names:
            return meta.num_rows, f"missing column {name}"
        got = _family(schema.field(name).type)
        if got not in (family, "null"):
            return meta.num_rows, f"column {name} is {schema.field(name).type}, expected {family}"
    return meta.num_rows, None


def scan(readings_uri: str, fleet: FleetSchema) -> tuple[list[str], int, list[RejectedFile]]:
    """The readable files under ``readings_uri``, their row count, and the rejected ones."""
    fs, _ = storage.resolve(readings_uri)
    good: list[str] = []
    rows = 0
    rejected: list[RejectedFile] = []
    for path in storage.list_files(readings_uri, ".parquet"):
        n, reason = check_file(path, fs, fleet)
        if reason is None:
            good.append(path)
            rows += n
        else:
            rejected.append(RejectedFile(path, reason, n if n >= 0 else None))
    return good, rows, rejected
