"""Readings from the pump controller: files in a spool folder (CSV with a header, or JSON
lines) and JSON lines on stdin.

A reading has ``pump_id``, ``timestamp`` (ISO 8601, naive = UTC, or seconds since the
epoch) and one value per channel and setting (empty / null / NaN: missing). The
controller writes a file under a dot-name and renames it when complete; the agent reads
only complete files, in name order, and moves each to ``done/`` or ``bad/`` (with a
``.reason`` beside it) with an atomic rename. A line that breaks the rules every door
applies (:mod:`pumpfleet.readings`) is set aside, with its reason, in
``bad/<file>.rejected.jsonl``, and the file's other lines are scored.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pumpfleet.errors import InputError
from pumpfleet.features import FeatureSpec
from pumpfleet.readings import check_pump_id, reading_problem

SUFFIXES = (".csv", ".jsonl", ".json")
DONE, BAD = "done", "bad"
# Keys a reading may carry beside the model's channels and settings.
KEYS = ("pump_id", "timestamp", "pump_class", "site")
# 1970 to 2100 (nanoseconds): a time outside it is a clock or parsing fault.
MAX_TS_NS = 4_102_444_800 * 10**9
SHOWN = 200  # characters of a set-aside line kept beside its reason


@dataclass(frozen=True)
class Reading:
    pump_id: str
    ts_ns: int
    values: dict[str, float | None]


@dataclass(frozen=True)
class SetAside:
    """A line that could not be used, and why."""

    line: int
    reason: str
    text: str


@dataclass
class Parsed:
    """What a file or a batch of lines held: its usable readings, the lines set aside,
    and the columns it carried that the model does not read (or lacked that it does)."""

    readings: list[Reading] = field(default_factory=list)
    set_aside: list[SetAside] = field(default_factory=list)
    unknown_columns: set[str] = field(default_factory=set)
    missing_columns: set[str] = field(default_factory=set)


def parse_time(value: Any) -> int:
    """Nanoseconds since the epoch from ISO 8601 text (naive: UTC) or epoch seconds, in
    1970 to 2100."""
    ns = _time(value)
    if not 0 <= ns <= MAX_TS_NS:
        raise InputError(f"timestamp: {value!r} is not between 1970 and 2100")
    return ns


def _time(value: Any) -> int:
    if isinstance(value, bool):
        raise InputError(f"timestamp: not a time: {value!r}")
    if isinstance(value, int | float):
        if not math.isfinite(value) or abs(value) > 1e11:
            raise InputError(f"timestamp: not a time: {value!r}")
        return round(float(value) * 1e9)
    text = str(value).strip()[:64]
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return _time(seconds)
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"timestamp: not a time: {text!r}") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return int(t.timestamp()) * 1_000_000_000 + t.microsecond * 1000


def _number(name: str, value: Any, text: bool) -> float | None:
    """A reading's value: a number (from CSV, ``text``: its text), or missing."""
    if value is None:
        return None
    if text and isinstance(value, str):
        if value.strip().lower() in ("", "nan", "null"):
            return None
        try:
            value = float(value)
        except ValueError:
            raise InputError(f"{name}: not a number: {value[:40]!r}") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"{name}: a number or null, not {str(value)[:40]!r}")
    x = float(value)
    if math.isinf(x):
        raise InputError(f"{name}: inf is not a reading")
    return None if math.isnan(x) else x


def parse_reading(obj: Any, spec: FeatureSpec, text: bool = False) -> Reading:
    """One reading from a mapping, by the rules every door applies
    (:mod:`pumpfleet.readings`): a pump id, a sane time, numbers (strict from JSON;
    ``text`` for CSV), finite and within their channel's physical range. The model's
    channels and settings are read; one that is absent is missing."""
    if not isinstance(obj, dict):
        raise InputError(f"not an object: {type(obj).__name__}")
    pump = check_pump_id(obj.get("pump_id"))
    if "timestamp" not in obj:
        raise InputError("timestamp: required")
    values = {c: _number(c, obj.get(c), text) for c in spec.inputs}
    problem = reading_problem(values, spec)
    if problem is not None:
        raise InputError(problem)
    return Reading(pump_id=pump, ts_ns=parse_time(obj["timestamp"]), values=values)


def _columns(out: Parsed, keys: Any, spec: FeatureSpec) -> None:
    names = set(keys)
    out.unknown_columns |= names - set(KEYS) - spec.accepted
    out.missing_columns |= set(spec.inputs) - names


def parse_line(line: str, number: int, spec: FeatureSpec, out: Parsed) -> None:
    """One JSON line into ``out``: a reading, or a line set aside with its reason."""
    try:
        obj = json.loads(line)
    except ValueError:
        out.set_aside.append(SetAside(number, "not JSON", line[:SHOWN]))
        return
    parse_object(obj, number, line, spec, out)


def parse_object(obj: Any, number: int, shown: str, spec: FeatureSpec, out: Parsed) -> None:
    """One decoded JSON reading into ``out`` (a JSON line, an MQTT message): a reading,
    or ``shown`` set aside with its reason."""
    try:
        out.readings.append(parse_reading(obj, spec))
        _columns(out, obj, spec)
    except InputError as e:
        out.set_aside.append(SetAside(number, str(e), shown[:SHOWN]))


def parse_text(text: str, suffix: str, spec: FeatureSpec) -> Parsed:
    """Every reading of a CSV or JSON-lines text; a line that breaks the rules is set
    aside with its reason and the rest are read. InputError only where the file as a
    whole cannot be read (a CSV the csv module refuses)."""
    out = Parsed()
    if suffix != ".csv":
        for i, line in enumerate(text.splitlines(), 1):
            if line.strip():
                parse_line(line, i, spec, out)
        return out
    lines = text.splitlines()
    try:
        reader = csv.DictReader(io.StringIO(text))
        _columns(out, reader.fieldnames or [], spec)
        for row in reader:
            number = reader.line_num
            if None in row:  # more fields than the header has
                extra = SetAside(number, "more fields than the header", _line(lines, number))
                out.set_aside.append(extra)
                continue
            try:
                out.readings.append(parse_reading(row, spec, text=True))
            except InputError as e:
                out.set_aside.append(SetAside(number, str(e), _line(lines, number)))
    except csv.Error as e:
        raise InputError(f"not readable as CSV: {e}") from None
    return out


def _line(lines: list[str], number: int) -> str:
    return lines[number - 1][:SHOWN] if 0 < number <= len(lines) else ""


def pending(spool: Path) -> list[Path]:
    """Complete reading files in the spool, in name order."""
    if not spool.is_dir():
        return []
    return sorted(
        p
        for p in spool.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix in SUFFIXES
    )


def read_file(path: Path, spec: FeatureSpec, max_bytes: int) -> tuple[str, Parsed]:
    """A file's key (name and content digest: a name used again is a new file) and what
    it held; InputError where the file cannot be read at all (over ``max_bytes``, not
    UTF-8, not readable as CSV)."""
    size = path.stat().st_size
    if size > max_bytes:
        raise InputError(f"{size} bytes, over the spool's limit of {max_bytes}")
    data = path.read_bytes()
    key = f"{path.name}:{hashlib.sha256(data).hexdigest()[:16]}"
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise InputError("not UTF-8 text") from None
    return key, parse_text(text, path.suffix, spec)


def write_set_aside(path: Path, set_aside: list[SetAside]) -> Path:
    """The lines of a spool file that were set aside, with their reasons, as JSON lines
    in ``bad/<name>.rejected.jsonl``."""
    folder = path.parent / BAD
    folder.mkdir(exist_ok=True)
    out = folder / f"{path.name}.rejected.jsonl"
    with out.open("a") as f:
        for s in set_aside:
            f.write(json.dumps({"line": s.line, "reason": s.reason, "text": s.text}) + "\n")
    return out


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
