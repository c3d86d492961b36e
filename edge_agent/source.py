"""Readings from the pump controller: files in a spool folder (CSV with a header, or JSON
lines) and JSON lines on stdin.

A reading has ``pump_id``, ``timestamp`` (ISO 8601, naive = UTC, or seconds since the
epoch) and one value per channel and setting (empty / null / NaN: missing). The
controller writes a file under a dot-name and renames it when complete; the agent reads
only complete files, in name order, and moves each to ``done/`` or ``bad/`` (with a
``.reason`` beside it) with an atomic rename.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pumpfleet.errors import InputError

SUFFIXES = (".csv", ".jsonl", ".json")
DONE, BAD = "done", "bad"


@dataclass(frozen=True)
class Reading:
    pump_id: str
    ts_ns: int
    values: dict[str, float | None]


def parse_time(value: Any) -> int:
    """Nanoseconds since the epoch from ISO 8601 text (naive: UTC) or epoch seconds."""
    if isinstance(value, bool):
        raise InputError(f"timestamp: not a time: {value!r}")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise InputError(f"timestamp: not a time: {value!r}")
        return round(float(value) * 1e9)
    text = str(value).strip()
    try:
        return round(float(text) * 1e9)
    except ValueError:
        pass
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"timestamp: not a time: {text!r}") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return int(t.timestamp()) * 1_000_000_000 + t.microsecond * 1000


def _number(name: str, value: Any) -> float | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "nan", "null")):
        return None
    if isinstance(value, bool):
        raise InputError(f"{name}: not a number: {value!r}")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name}: not a number: {value!r}") from None
    if math.isinf(x):
        raise InputError(f"{name}: inf is not a reading")
    return None if math.isnan(x) else x


def parse_reading(obj: dict[str, Any], inputs: list[str]) -> Reading:
    """One reading from a mapping; the channels and settings in ``inputs`` are read (one
    that is absent is missing)."""
    pump = obj.get("pump_id")
    if not isinstance(pump, str) or not pump.strip():
        raise InputError("pump_id: required")
    if "timestamp" not in obj:
        raise InputError("timestamp: required")
    return Reading(
        pump_id=pump.strip(),
        ts_ns=parse_time(obj["timestamp"]),
        values={c: _number(c, obj.get(c)) for c in inputs},
    )


def parse_text(text: str, suffix: str, inputs: list[str]) -> list[Reading]:
    """Every reading of a CSV or JSON-lines text; InputError naming the first bad line."""
    if suffix == ".csv":
        rows: list[Any] = list(csv.DictReader(io.StringIO(text)))
        first_line = 2  # after the header
    else:
        rows = []
        for i, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    raise InputError(f"line {i}: not JSON") from None
        first_line = 1
    out = []
    for i, row in enumerate(rows, first_line):
        if not isinstance(row, dict):
            raise InputError(f"line {i}: not an object")
        try:
            out.append(parse_reading(row, inputs))
        except InputError as e:
            raise InputError(f"line {i}: {e}") from None
    return out


def pending(spool: Path) -> list[Path]:
    """Complete reading files in the spool, in name order."""
    if not spool.is_dir():
        return []
    return sorted(
        p
        for p in spool.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix in SUFFIXES
    )


def read_file(path: Path, inputs: list[str]) -> tuple[str, list[Reading]]:
    """A file's key (name and content digest: a name used again is a new file) and its
    readings."""
    data = path.read_bytes()
    key = f"{path.name}:{hashlib.sha256(data).hexdigest()[:16]}"
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise InputError("not UTF-8 text") from None
    return key, parse_text(text, path.suffix, inputs)


def move(path: Path, where: str, reason: str | None = None) -> Path:
    """Move a spool file into ``done/`` or ``bad/`` (atomic rename; a name already there
    gets a numbered suffix), with a ``.reason`` file beside a bad one."""
    folder = path.parent / where
    folder.mkdir(exist_ok=True)
    dest = folder / path.name
    n = 1
    while dest.exists():
        dest = folder / f"{path.stem}.{n}{path.suffix}"
        n += 1
    if reason is not None:
        (folder / f"{dest.name}.reason").write_text(reason + "\n")
    os.replace(path, dest)
    return dest


def prune(folder: Path, keep: int) -> int:
    """Delete all but the ``keep`` newest files of ``folder``; returns how many went."""
    if not folder.is_dir():
        return 0
    files = sorted((p for p in folder.iterdir() if p.is_file()), key=lambda p: p.stat().st_mtime)
    gone = files[: max(0, len(files) - keep)]
    for p in gone:
        p.unlink(missing_ok=True)
    return len(gone)
