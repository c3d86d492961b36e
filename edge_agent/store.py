"""The store-and-forward buffer: every prediction and alert in SQLite (WAL, synchronous
writes) until the cloud has acknowledged it.

What makes "exactly once" hold across a SIGKILL at any point:
- a spool file's predictions, the pumps' rolling windows and the mark that the file is
  done are written in one transaction (a file is either wholly in or not at all);
- a batch is fixed (its rows get the batch key) in a transaction before it is sent, so
  a batch re-sent after a crash carries the same key and the same rows, and the cloud
  stores it once;
- rows are deleted only when the cloud acknowledged their batch.

Disk use is bounded by a quota on the buffered records' bytes: over it, routine
predictions not yet in a batch are thinned (every other one, oldest first; counted),
alerts and anomalies (the health model's flags) never.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

COUNTERS = (
    "scored",
    "alerts",
    "anomalies",
    "thinned",
    "uploaded",
    "batches_acknowledged",
    "duplicates_acknowledged",
    "bad_files",
    "stale_readings",
    "reading_gaps",
    "window_resets",
    "scoring_errors",
    "anomaly_errors",
    "records_refused",
    "rows_set_aside",
    "windows_set_aside",
    "unknown_columns",
    "missing_columns",
    "step_errors",
    "bundles_installed",
    "bundles_rejected",
    "rollbacks",
    "mqtt_messages",
    "mqtt_set_aside",
    "mqtt_redelivered",
    "explained",
    "alerts_unexplained",
)
# Thinning frees down to this share of the quota, so that it does not run on every file.
THIN_TO = 0.9

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    alert INTEGER NOT NULL,
    anomaly INTEGER NOT NULL DEFAULT 0,
    payload TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    batch TEXT
);
CREATE INDEX IF NOT EXISTS outbox_batch ON outbox (batch);
CREATE TABLE IF NOT EXISTS files (key TEXT PRIMARY KEY, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS pumps (pump_id TEXT PRIMARY KEY, state TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def thinning(candidates: list[tuple[int, int]], excess: int) -> list[int]:
    """Ids of routine rows ``(id, bytes)``, oldest first, to drop so that ``excess``
    bytes are freed: every other row from the oldest on (a thinned stretch still covers
    its whole period, at half the rate), again over what is left if that is not enough."""
    drop: list[int] = []
    freed = 0
    remaining = list(candidates)
    while freed < excess and remaining:
        keep: list[tuple[int, int]] = []
        for i, (row_id, size) in enumerate(remaining):
            if i % 2 == 1 and freed < excess:
                drop.append(row_id)
                freed += size
            else:
                keep.append((row_id, size))
        if len(keep) == len(remaining):  # one row left: it goes
            drop.append(keep[0][0])
            freed += keep[0][1]
            keep = keep[1:]
        remaining = keep
    return drop


class Store:
    """The agent's SQLite database. One writer (the agent); ``status`` may read at the
    same time (WAL)."""

    def __init__(self, path: Path, readonly: bool = False) -> None:
        self.path = path
        if readonly:
            # `status` beside a running agent: it never takes the write lock.
            self.db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
            self.store_id = str(self._one("SELECT value FROM meta WHERE name = 'store_id'"))
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        new = not path.exists()
        self.db = sqlite3.connect(path, isolation_level=None, timeout=30)
        if new:
            # Pages freed by thinning go back to the file system (incremental_vacuum).
            self.db.execute("PRAGMA auto_vacuum = INCREMENTAL")
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("PRAGMA synchronous = FULL")
        # The write-ahead log is cut back to this after each checkpoint.
        self.db.execute("PRAGMA journal_size_limit = 4194304")
        self.db.executescript(_SCHEMA)
        if "anomaly" not in self._columns("outbox"):
            # A store made before health models: its rows are not anomalies.
            self.db.execute("ALTER TABLE outbox ADD COLUMN anomaly INTEGER NOT NULL DEFAULT 0")
        with self._tx():
            self.db.execute(
                "INSERT OR IGNORE INTO meta VALUES ('store_id', ?)", (uuid.uuid4().hex[:12],)
            )
        self.store_id = str(self._one("SELECT value FROM meta WHERE name = 'store_id'"))

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def _tx(self) -> Iterator[None]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _columns(self, table: str) -> set[str]:
        return {str(r[1]) for r in self.db.execute(f"PRAGMA table_info({table})")}

    def _one(self, sql: str, args: tuple[Any, ...] = ()) -> Any:
        row = self.db.execute(sql, args).fetchone()
        return row[0] if row else None

    def _count(self, name: str, n: int) -> None:
        if n:
            self.db.execute(
                "INSERT INTO counters VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
                (name, n),
            )

    # --- what the scorer writes ---------------------------------------------------------

    def file_done(self, key: str) -> bool:
        return self._one("SELECT 1 FROM files WHERE key = ?", (key,)) is not None

    def pump_states(self, pump_ids: list[str]) -> dict[str, dict[str, Any]]:
        out = {}
        for pump_id in pump_ids:
            text = self._one("SELECT state FROM pumps WHERE pump_id = ?", (pump_id,))
            if text is not None:
                out[pump_id] = json.loads(text)
        return out

    def commit(
        self,
        records: list[dict[str, Any]],
        pumps: dict[str, dict[str, Any]],
        quota_bytes: int,
        file_key: str | None = None,
        counters: dict[str, int] | None = None,
    ) -> int:
        """In one transaction: the records (``{"key", "alert", "anomaly", "row"}``;
        ``anomaly`` may be left out), the pumps' rolling state, the source file's done
        mark and counters; then the quota. Returns the number of rows thinned."""
        with self._tx():
            for r in records:
                payload = json.dumps(r["row"], separators=(",", ":"))
                self.db.execute(
                    "INSERT OR IGNORE INTO outbox (key, alert, anomaly, payload, bytes) "
                    "VALUES (?,?,?,?,?)",
                    (
                        r["key"],
                        int(r["alert"]),
                        int(r.get("anomaly", False)),
                        payload,
                        len(payload),
                    ),
                )
            for pump_id, state in pumps.items():
                self.db.execute(
                    "INSERT OR REPLACE INTO pumps VALUES (?, ?)", (pump_id, json.dumps(state))
                )
            if file_key is not None:
                self.db.execute(
                    "INSERT OR IGNORE INTO files VALUES (?, ?)", (file_key, time.time())
                )
            self._count("scored", len(records))
            self._count("alerts", sum(bool(r["alert"]) for r in records))
            self._count("anomalies", sum(bool(r.get("anomaly")) for r in records))
            for name, n in (counters or {}).items():
                self._count(name, n)
            thinned = self._thin(quota_bytes)
        if thinned:
            self.db.execute("PRAGMA incremental_vacuum")
        return thinned

    def count(self, counters: dict[str, int]) -> None:
        with self._tx():
            for name, n in counters.items():
                self._count(name, n)

    def buffered_bytes(self) -> int:
        return int(self._one("SELECT COALESCE(SUM(bytes), 0) FROM outbox"))

    def _thin(self, quota_bytes: int) -> int:
        total = self.buffered_bytes()
        if total <= quota_bytes:
            return 0
        candidates = self.db.execute(
            "SELECT id, bytes FROM outbox WHERE alert = 0 AND anomaly = 0 AND batch IS NULL "
            "ORDER BY id"
        ).fetchall()
        drop = thinning(candidates, total - int(quota_bytes * THIN_TO))
        self.db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in drop])
        self._count("thinned", len(drop))
        return len(drop)

    # --- what the uploader reads --------------------------------------------------------

    def pending_batch(self, max_rows: int) -> tuple[str, list[dict[str, Any]]] | None:
        """The batch to send: the oldest one already fixed (sent before, not yet
        acknowledged), else a new one of up to ``max_rows`` oldest rows."""
        key = self._one("SELECT batch FROM outbox WHERE batch IS NOT NULL ORDER BY id LIMIT 1")
        if key is None:
            with self._tx():
                ids = [
                    r[0]
                    for r in self.db.execute(
                        "SELECT id FROM outbox WHERE batch IS NULL ORDER BY id LIMIT ?",
                        (max_rows,),
                    )
                ]
                if not ids:
                    return None
                # The store's own id keeps keys unique if the device's database is ever
                # made anew (row ids start again at 1).
                key = f"{self.store_id}-{ids[0]:010d}-{ids[-1]:010d}"
                self.db.executemany(
                    "UPDATE outbox SET batch = ? WHERE id = ?", [(key, i) for i in ids]
                )
        rows = self.db.execute("SELECT payload FROM outbox WHERE batch = ? ORDER BY id", (key,))
        return str(key), [json.loads(r[0]) for r in rows]

    def acknowledge(self, batch_key: str, duplicate: bool) -> int:
        """Delete an acknowledged batch's rows; returns how many."""
        with self._tx():
            n = self.db.execute("DELETE FROM outbox WHERE batch = ?", (batch_key,)).rowcount
            self._count("uploaded", n)
            self._count("batches_acknowledged", 1)
            self._count("duplicates_acknowledged", int(duplicate))
        return int(n)

    # --- status -------------------------------------------------------------------------

    def counters(self) -> dict[str, int]:
        found = dict(self.db.execute("SELECT name, value FROM counters").fetchall())
        return {name: int(found.get(name, 0)) for name in COUNTERS}

    def buffered(self) -> dict[str, int]:
        # `status` may read a store that a running agent has not brought up to date yet.
        anomaly = "anomaly" if "anomaly" in self._columns("outbox") else "0"
        rows, alerts, anomalies, size = self.db.execute(
            "SELECT COUNT(*), COALESCE(SUM(alert), 0), "
            f"COALESCE(SUM({anomaly}), 0), COALESCE(SUM(bytes), 0) FROM outbox"
        ).fetchone()
        return {
            "rows": int(rows),
            "alerts": int(alerts),
            "anomalies": int(anomalies),
            "bytes": int(size),
        }
