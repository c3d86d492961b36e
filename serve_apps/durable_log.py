"""A replica's prediction log that loses no answered request's row: every row is written
to the replica's write-ahead file before its answer is sent, and recovered into the log
(exactly once) if the replica dies before writing it to Parquet.

- **Before the answer.** :meth:`DurableLog.extend` writes the rows to the current
  segment of the replica's write-ahead log (``<log>-wal/``) with one ``write`` call on the
  request path: once it returns, the kernel holds them, so the replica's death (SIGKILL,
  out of memory) loses none. A thread makes them durable on disk every
  ``SYNC_SECONDS`` (``fdatasync``, group commit): a machine that loses power loses at
  most that much.
- **To Parquet.** :meth:`DurableLog.flush` (every second, by the replica's flush thread)
  starts a new segment, writes the old segment's rows as one Parquet file named after
  it, synced, and only then deletes the segment.
- **Recovered, exactly once.** Each live segment is locked (``flock``) by the process that
  writes it; the kernel drops the lock when that process dies, however it dies. Any
  replica that starts (and each flush after) re-writes every unlocked segment it finds
  to the Parquet file named after it and deletes the segment. The name makes a repeated
  recovery, or a recovery of a segment whose Parquet file was already written, an
  overwrite with the same rows, never a second copy.

Segments hold frames: length, CRC-32 and kind, then the rows as JSON or a table as an
Arrow IPC stream. A frame cut short (the machine stopped mid-write) ends the segment.
The log folder must be on a local disk for the locks to hold (not NFS).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import struct
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pumpfleet import storage
from pumpfleet.errors import PumpfleetError
from pumpfleet.records import rows_to_table
from pumpfleet.settings import get_settings

log = logging.getLogger(__name__)

SYNC_SECONDS = 0.02
_HEAD = struct.Struct("<IIB")  # payload length, its CRC-32, kind
ROWS, TABLE = 1, 2
SUFFIX = ".wal"


def wal_dir(root: str) -> Path:
    """Where the write-ahead segments of the log at ``root`` go: beside a local log
    (``<root>-wal``); under the workspace for a log in an object store."""
    if not storage.is_remote(root):
        return Path(f"{root.rstrip('/').removeprefix('file://')}-wal")
    name = uuid.uuid5(uuid.NAMESPACE_URL, root).hex[:12]
    return get_settings().home / "wal" / name


def _plain(value: Any) -> Any:
    """JSON for the numpy values of a log row (a time as integer nanoseconds)."""
    if isinstance(value, np.datetime64):
        return int(value.astype("datetime64[ns]").astype(np.int64))
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} in a log row")


def _frame(kind: int, payload: bytes) -> bytes:
    return _HEAD.pack(len(payload), zlib.crc32(payload), kind) + payload


def frames(data: bytes) -> Iterator[tuple[int, bytes]]:
    """The whole frames of a segment, in order; stops at the first torn or corrupt one."""
    at = 0
    while at + _HEAD.size <= len(data):
        size, crc, kind = _HEAD.unpack_from(data, at)
        payload = data[at + _HEAD.size : at + _HEAD.size + size]
        if len(payload) < size or zlib.crc32(payload) != crc:
            log.warning("write-ahead segment cut short at byte %d: the rest is dropped", at)
            return
        yield kind, payload
        at += _HEAD.size + size


def _ipc(table: Any) -> bytes:
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


@dataclass
class Segment:
    """One write-ahead file, open and locked by this process."""

    path: Path
    fd: int

    @property
    def part(self) -> str:
        """The Parquet file its rows go to: ``date=<day it began>/part-<its name>``."""
        writer, seq, day = self.path.stem.rsplit("-", 2)
        return f"date={day[:4]}-{day[4:6]}-{day[6:]}/part-{writer}-{seq}.parquet"


def _try_lock(path: Path) -> Segment | None:
    """``path`` opened and locked, or None if a live process holds it (or it is gone)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return Segment(path, fd)


class DurableLog:
    """Rows buffered for Parquet like :class:`pumpfleet.predlog.PredictionLog` (the same
    ``append``, ``extend``, ``extend_table``, ``flush`` and ``written``), each written
    ahead to a segment of ``wal`` (default :func:`wal_dir`) before it returns. Recovers
    the segments of dead writers when it starts."""

    def __init__(
        self,
        root: str,
        max_rows: int = 512,
        to_table: Callable[[list[dict[str, Any]]], Any] = rows_to_table,
        wal: Path | None = None,
    ) -> None:
        self.root = root
        self.to_table = to_table
        self.max_rows = max_rows
        self.wal = wal or wal_dir(root)
        self.wal.mkdir(parents=True, exist_ok=True)
        self.writer = uuid.uuid4().hex[:12]
        self._seq = 0
        self._rows: list[dict[str, Any]] = []
        self._tables: list[Any] = []
        self._pending = 0
        self._dirty = False
        self._lock = threading.Lock()
        self.written = 0
        self.recovered = self.recover()
        self._segment = self._open_segment()
        self._stop = threading.Event()
        self._syncer = threading.Thread(target=self._sync_loop, daemon=True, name="wal-sync")
        self._syncer.start()

    # --- writing ahead ----------------------------------------------------------------

    def _open_segment(self) -> Segment:
        """A new segment, locked before it takes its name (a recovery must never see it
        unlocked)."""
        self._seq += 1
        day = time.strftime("%Y%m%d", time.gmtime())
        path = self.wal / f"{self.writer}-{self._seq:08d}-{day}{SUFFIX}"
        tmp = path.with_suffix(".new")
        fd = os.open(tmp, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(tmp, path)
        return Segment(path, fd)

    def _write_ahead(self, data: bytes) -> None:
        """Under the lock: ``data`` at the end of the current segment, whole."""
        view = memoryview(data)
        while view:
            view = view[os.write(self._segment.fd, view) :]
        self._dirty = True

    def append(self, row: dict[str, Any]) -> None:
        self.extend([row])

    def extend(self, rows: list[dict[str, Any]]) -> None:
        """Rows (record dicts), in the write-ahead log before this returns."""
        data = _frame(ROWS, json.dumps(rows, default=_plain).encode())
        with self._lock:
            self._write_ahead(data)
            self._rows.extend(rows)
            self._pending += len(rows)
            full = self._pending >= self.max_rows
        if full:
            self.flush()

    def extend_table(self, table: Any) -> None:
        """Rows as one pyarrow table, in the write-ahead log before this returns."""
        data = _frame(TABLE, _ipc(table))
        with self._lock:
            self._write_ahead(data)
            self._tables.append(table)
            self._pending += table.num_rows
            full = self._pending >= self.max_rows
        if full:
            self.flush()

    def _sync_loop(self) -> None:
        """Group commit: what was written ahead reaches the disk every SYNC_SECONDS."""
        while not self._stop.wait(SYNC_SECONDS):
            with self._lock:
                dirty, self._dirty = self._dirty, False
                fd = self._segment.fd
            if dirty:
                # OSError: flushed and closed meanwhile, its rows are in Parquet
                with contextlib.suppress(OSError):
                    os.fdatasync(fd)

    # --- to Parquet -------------------------------------------------------------------

    def flush(self) -> int:
        """The buffered rows as one Parquet file, then their segment deleted; and any
        segment a dead writer left, recovered. Returns the rows written."""
        with self._lock:
            rows, self._rows = self._rows, []
            tables, self._tables = self._tables, []
            self._pending = 0
            old = None
            if rows or tables:
                old, self._segment = self._segment, self._open_segment()
        n = 0
        if old is not None:
            try:
                if rows:
                    tables.append(self.to_table(rows))
                n = self._publish(old, tables)
            except BaseException:
                os.close(old.fd)  # unlocked: the next recovery writes it
                raise
            self.written += n
        self.recovered += self.recover()
        return n

    def _publish(self, segment: Segment, tables: list[Any]) -> int:
        """``tables`` as the segment's Parquet file (synced), then the segment deleted."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.concat_tables(tables, promote_options="permissive")
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        data = sink.getvalue().to_pybytes()
        uri = storage.join(self.root, segment.part)
        if storage.is_remote(uri):
            storage.write_bytes(uri, data)
        else:
            _write_synced(Path(uri.removeprefix("file://")), data)
        segment.path.unlink(missing_ok=True)  # before the lock goes: no one recovers it
        os.close(segment.fd)
        return int(table.num_rows)

    def recover(self) -> int:
        """Every segment no live process holds, into the log under its own name (an
        overwrite if it is there already) and deleted. Returns the rows recovered."""
        import pyarrow as pa

        n = 0
        for path in sorted(self.wal.glob(f"*{SUFFIX}")):
            segment = _try_lock(path)
            if segment is None:
                continue
            try:
                with open(segment.fd, "rb", closefd=False) as f:
                    data = f.read()
                rows: list[dict[str, Any]] = []
                tables: list[Any] = []
                for kind, payload in frames(data):
                    if kind == ROWS:
                        rows.extend(json.loads(payload))
                    else:
                        tables.append(pa.ipc.open_stream(payload).read_all())
                if rows:
                    tables.append(self.to_table(rows))
            except (ValueError, pa.ArrowException, PumpfleetError):
                # kept for a person to read, out of the way of every later recovery
                log.exception("write-ahead segment %s cannot be read; set aside", path)
                path.rename(path.with_suffix(".bad"))
                os.close(segment.fd)
                continue
            if not tables:  # a segment that never held a row
                path.unlink(missing_ok=True)
                os.close(segment.fd)
                continue
            try:
                k = self._publish(segment, tables)
            except BaseException:
                os.close(segment.fd)  # left for the next recovery
                raise
            log.warning("recovered %d rows a stopped replica had not logged (%s)", k, path.name)
            n += k
        return n


def _write_synced(path: Path, data: bytes) -> None:
    """A local file whole and on disk: a temporary name, fsync, rename, the folder synced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
