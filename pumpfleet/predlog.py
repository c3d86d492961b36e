"""The prediction log: every scored request, appended in batches to Parquet under the
workspace, in the prediction record's Arrow schema (:mod:`pumpfleet.records`). It is the
monitoring input.

Layout: ``date=<UTC day written>/pump_class=<class>/part-<id>.parquet``, one file per
class of a flush, so that the monitor reads only the days and classes it needs
(:mod:`pumpfleet.monitoring.incremental`); rows without a class, and logs written before
the class partitions (``date=<day>/part-<id>.parquet``, every class in one file, as the
Serve replicas' durable log still writes), are read as well."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pandas as pd

from pumpfleet import storage
from pumpfleet.records import rows_to_table

log = logging.getLogger(__name__)

CLASS_COLUMN = "pump_class"


class PredictionLog:
    """Buffers rows and writes them as one Parquet file per flush (thread-safe). Rows
    become a table by ``to_table`` (the prediction record's schema by default)."""

    def __init__(
        self,
        root: str,
        max_rows: int = 512,
        to_table: Callable[[list[dict[str, Any]]], Any] = rows_to_table,
    ) -> None:
        self.root = root
        self.to_table = to_table
        self.max_rows = max_rows
        self._rows: list[dict[str, Any]] = []
        self._tables: list[Any] = []  # pyarrow tables: a batch's rows, kept columnar
        self._pending = 0
        self._lock = threading.Lock()
        self.written = 0

    def append(self, row: dict[str, Any]) -> None:
        self.extend([row])

    def extend(self, rows: list[dict[str, Any]]) -> None:
        with self._lock:
            self._rows.extend(rows)
            self._pending += len(rows)
            full = self._pending >= self.max_rows
        if full:
            self.flush()

    def extend_table(self, table: Any) -> None:
        """Rows as one pyarrow table (the columns of :meth:`extend`'s dicts)."""
        with self._lock:
            self._tables.append(table)
            self._pending += table.num_rows
            full = self._pending >= self.max_rows
        if full:
            self.flush()

    def flush(self) -> int:
        import pyarrow as pa
        import pyarrow.parquet as pq

        with self._lock:
            rows, self._rows = self._rows, []
            tables, self._tables = self._tables, []
            self._pending = 0
        if rows:
            tables.append(self.to_table(rows))
        if not tables:
            return 0
        table = pa.concat_tables(tables, promote_options="permissive")
        day = time.strftime("%Y-%m-%d", time.gmtime())
        name = f"part-{uuid.uuid4().hex}.parquet"
        for folder, part in by_class(table):
            sink = pa.BufferOutputStream()
            pq.write_table(part, sink)
            uri = storage.join(self.root, f"date={day}", *folder, name)
            storage.write_bytes(uri, sink.getvalue().to_pybytes())
        self.written += table.num_rows
        return int(table.num_rows)


def by_class(table: Any) -> list[tuple[list[str], Any]]:
    """A table's rows per class partition folder (``pump_class=<c>``); rows with no class
    stay in the day's folder itself."""
    import pyarrow.compute as pc

    if CLASS_COLUMN not in table.column_names:
        return [([], table)]
    col = table.column(CLASS_COLUMN)
    out: list[tuple[list[str], Any]] = []
    for cls in pc.unique(col).to_pylist():
        if cls is None or not plain_partition(str(cls)):
            rows = table.filter(pc.is_null(col) if cls is None else pc.equal(col, cls))
            out.append(([], rows))
        else:
            out.append(([f"{CLASS_COLUMN}={cls}"], table.filter(pc.equal(col, cls))))
    return out


def plain_partition(value: str) -> bool:
    """A value that can name a partition folder as it is."""
    return bool(value) and value not in (".", "..") and not set(value) & set("/\\=")


def read_log(root: str) -> pd.DataFrame:
    """Every logged prediction under ``root`` (empty frame if none), each request once: a
    request the front door retried after its replica died may have been logged by both
    replicas under the same ``request_id`` (``serve_apps/front_door.py``)."""
    import pyarrow.parquet as pq

    files = storage.list_files(root, ".parquet")
    if not files:
        return pd.DataFrame()
    fs, _ = storage.resolve(root)
    frames = [pq.read_table(f, filesystem=fs).to_pandas() for f in files]
    out = pd.concat(frames, ignore_index=True)
    if "request_id" in out:
        again = out["request_id"].notna() & out.duplicated("request_id")
        out = out[~again].reset_index(drop=True)
    return out
