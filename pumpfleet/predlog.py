"""The prediction log: every scored request, appended in batches to Parquet under the
workspace. It is the monitoring input."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

import pandas as pd

from pumpfleet import storage

log = logging.getLogger(__name__)


class PredictionLog:
    """Buffers rows and writes them as one Parquet file per flush (thread-safe)."""

    def __init__(self, root: str, max_rows: int = 512) -> None:
        self.root = root
        self.max_rows = max_rows
        self._rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.written = 0

    def append(self, row: dict[str, Any]) -> None:
        with self._lock:
            self._rows.append(row)
            full = len(self._rows) >= self.max_rows
        if full:
            self.flush()

    def extend(self, rows: list[dict[str, Any]]) -> None:
        with self._lock:
            self._rows.extend(rows)
            full = len(self._rows) >= self.max_rows
        if full:
            self.flush()

    def flush(self) -> int:
        import pyarrow as pa
        import pyarrow.parquet as pq

        with self._lock:
            rows, self._rows = self._rows, []
        if not rows:
            return 0
        table = pa.Table.from_pylist(rows)
        day = time.strftime("%Y-%m-%d", time.gmtime())
        uri = storage.join(self.root, f"date={day}", f"part-{uuid.uuid4().hex}.parquet")
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        storage.write_bytes(uri, sink.getvalue().to_pybytes())
        self.written += len(rows)
        return len(rows)


def read_log(root: str) -> pd.DataFrame:
    """Every logged prediction under ``root`` (empty frame if none)."""
    import pyarrow.parquet as pq

    files = storage.list_files(root, ".parquet")
    if not files:
        return pd.DataFrame()
    fs, _ = storage.resolve(root)
    frames = [pq.read_table(f, filesystem=fs).to_pandas() for f in files]
    return pd.concat(frames, ignore_index=True)
