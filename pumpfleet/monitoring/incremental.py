"""What a monitor run reads: the prediction log's partitions since each class's watermark,
and the rolling window before it, never the whole log.

The log is partitioned by the day a row was written and by class
(``date=<day>/pump_class=<class>/``, :mod:`pumpfleet.predlog`); a row is written on or
after the day of its timestamp. A class's watermark is the newest day it has read and the
files of that day it has read, with the newest timestamp analysed. A run reads, for each
class, the partitions from ``window_days`` before its watermark's day on (a class without
one: before the newest day): the new rows and the window the analysis compares them in.
Rows older than the window (by timestamp: the day of the class's newest row and the
``window_days`` before it) are dropped, so an
old episode stops counting once it leaves the window.

Files of the older layout (every class in one file, right under a day) and edge uploads
(``edge/<device>/<batch>.parquet``, dated by when they were stored) are read for every
class from the earliest day any class needs. A file that cannot be read is left out with a
note (and tried again next run): one bad file never stops the monitor.

The watermark is written (atomically: a rename locally, one PUT on object storage) only
after the run's reports, so a run that dies before it is repeated in full by the next one:
nothing is lost, at worst analysed twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pandas as pd
from pydantic import BaseModel, Field, ValidationError

from pumpfleet import storage
from pumpfleet.predlog import CLASS_COLUMN

log = logging.getLogger(__name__)

WATERMARK = "monitor-watermark.json"
DAY_PREFIX = "date="
EDGE = "edge"
WINDOW_DAYS = 14


class ClassMark(BaseModel):
    """How far a class has been read: the newest day, that day's files, the newest row."""

    day: str
    files: list[str] = Field(default_factory=list)
    through: str | None = None  # ISO timestamp of the newest row analysed


class Watermark(BaseModel):
    classes: dict[str, ClassMark] = Field(default_factory=dict)


def watermark_uri(reports_uri: str) -> str:
    return storage.join(reports_uri, WATERMARK)


def read_watermark(uri: str) -> Watermark:
    """The stored watermark; empty if there is none (or it cannot be read: a warning,
    then the next run starts from the window before the newest day)."""
    if not storage.exists(uri):
        return Watermark()
    try:
        return Watermark.model_validate(storage.read_json(uri))
    except (ValueError, ValidationError, OSError) as e:
        log.warning("the monitor's watermark %s cannot be read (%s); starting afresh", uri, e)
        return Watermark()


def write_watermark(uri: str, mark: Watermark) -> None:
    storage.write_json(uri, mark.model_dump())


@dataclass(frozen=True)
class LogFile:
    path: str  # inside its filesystem
    name: str  # relative to the log's root: the watermark's key
    day: str  # YYYY-MM-DD: its partition's day, or the day it was stored (edge)
    pump_class: str | None  # its partition's class; None: rows of any class


@dataclass
class Window:
    """What one run read and analyses: every class's rows in its window, the files read,
    how many rows each class has that it never read before, and the next watermark."""

    rows: pd.DataFrame
    files: list[LogFile]
    new_rows: dict[str, int]
    mark: Watermark
    notes: list[str] = field(default_factory=list)


def _shift(day: str, days: int) -> str:
    return (date.fromisoformat(day) - timedelta(days=days)).isoformat()


def _files(root: str, fs: Any, base: str, day: str) -> list[LogFile]:
    out = []
    for path in storage.list_files(storage.join(root, f"{DAY_PREFIX}{day}"), ".parquet"):
        rel = path[len(base) :].lstrip("/")
        parts = rel.split("/")
        cls = next((p.split("=", 1)[1] for p in parts if p.startswith(f"{CLASS_COLUMN}=")), None)
        out.append(LogFile(path, rel, day, cls))
    return out


def _edge_files(fs: Any, base: str) -> list[LogFile]:
    import pyarrow.fs as pafs

    edge = f"{base}/{EDGE}"
    if fs.get_file_info(edge).type != pafs.FileType.Directory:
        return []
    infos = fs.get_file_info(pafs.FileSelector(edge, recursive=True))
    out = []
    for i in infos:
        if i.type == pafs.FileType.File and i.path.endswith(".parquet"):
            stored = i.mtime or datetime.now(UTC)
            day = stored.astimezone(UTC).date().isoformat()
            out.append(LogFile(i.path, i.path[len(base) :].lstrip("/"), day, None))
    return out


def plan(root: str, mark: Watermark, window_days: int = WINDOW_DAYS) -> tuple[list[LogFile], str]:
    """The files one run reads, and the newest day in the log. Lists the day folders
    (one listing), the files of the days needed, and the edge uploads' names."""
    fs, base = storage.resolve(root)
    days = sorted(d.removeprefix(DAY_PREFIX) for d in storage.folders(root))
    days = [d for d in days if _is_day(d)]
    edge = _edge_files(fs, base)
    newest = max([*days[-1:], *(f.day for f in edge)], default=None)
    if newest is None:
        return [], ""
    fresh = _shift(newest, window_days)
    since = {c: _shift(min(m.day, newest), window_days) for c, m in mark.classes.items()}
    earliest = min([fresh, *since.values()])
    files = [f for d in days if d >= earliest for f in _files(root, fs, base, d)]
    files += [f for f in edge if f.day >= earliest]
    wanted = [f for f in files if f.pump_class is None or f.day >= since.get(f.pump_class, fresh)]
    return wanted, newest


def _is_day(text: str) -> bool:
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


def _read(fs: Any, f: LogFile) -> pd.DataFrame:
    import pyarrow.parquet as pq

    frame = pq.read_table(f.path, filesystem=fs).to_pandas()
    if f.pump_class is not None and CLASS_COLUMN not in frame:
        frame[CLASS_COLUMN] = f.pump_class
    return frame


def _seen(mark: Watermark, cls: str, f: LogFile) -> bool:
    m = mark.classes.get(cls)
    return m is not None and (f.day < m.day or (f.day == m.day and f.name in m.files))


def read_window(root: str, mark: Watermark, window_days: int = WINDOW_DAYS) -> Window:
    """Every class's rows in its window (one frame, each request once) and the watermark
    to store once the run is done."""
    files, _ = plan(root, mark, window_days)
    fs, _ = storage.resolve(root) if files else (None, "")
    frames: list[pd.DataFrame] = []
    read: list[LogFile] = []
    notes: list[str] = []
    for f in files:
        try:
            frame = _read(fs, f)
        except Exception as e:  # a bad file: noted, read again next run
            notes.append(f"{f.name} cannot be read, left out: {str(e).splitlines()[0][:200]}")
            log.warning(notes[-1])
            continue
        if not frame.empty:
            frames.append(frame.assign(_file=len(read)))
        read.append(f)
    if not frames:
        return Window(pd.DataFrame(), read, {}, mark, notes)
    rows = pd.concat(frames, ignore_index=True)
    if "request_id" in rows:
        again = rows["request_id"].notna() & rows.duplicated("request_id")
        rows = rows[~again]
    rows = _in_window(rows, window_days)
    new_rows, nxt = _advance(rows, read, mark)
    return Window(rows.drop(columns="_file").reset_index(drop=True), read, new_rows, nxt, notes)


def _in_window(rows: pd.DataFrame, window_days: int) -> pd.DataFrame:
    """Rows of their class's newest row's day and the ``window_days`` before it (all rows
    when the log has no class or timestamp column: the monitor notes why it cannot
    analyse them)."""
    if CLASS_COLUMN not in rows or "timestamp" not in rows:
        return rows
    ts = pd.to_datetime(rows["timestamp"], utc=True, errors="coerce")
    newest = ts.groupby(rows[CLASS_COLUMN]).transform("max").dt.floor("D")
    return rows[ts.isna() | (ts >= newest - pd.Timedelta(days=window_days))]


def _advance(
    rows: pd.DataFrame, read: list[LogFile], mark: Watermark
) -> tuple[dict[str, int], Watermark]:
    """Each class's rows never read before, and the watermark past what was read."""
    if CLASS_COLUMN not in rows:
        return {}, mark
    nxt = mark.model_copy(deep=True)
    new_rows: dict[str, int] = {}
    stamps = rows["timestamp"] if "timestamp" in rows else pd.Series(pd.NaT, index=rows.index)
    ts = pd.to_datetime(stamps, utc=True, errors="coerce")
    for cls, idx in rows.groupby(rows[CLASS_COLUMN].astype(str)).groups.items():
        cls = str(cls)
        mine = {int(i) for i in rows.loc[idx, "_file"].unique()}
        new = [i for i in mine if not _seen(mark, cls, read[i])]
        new_rows[cls] = int(rows.loc[idx, "_file"].isin(new).sum())
        last = max([mark.classes[cls].day] if cls in mark.classes else [], default="")
        day = max([last, *(read[i].day for i in mine)])
        names = sorted(
            {read[i].name for i in mine if read[i].day == day}
            | (set(mark.classes[cls].files) if cls in mark.classes and last == day else set())
        )
        through = ts.loc[idx].max()
        nxt.classes[cls] = ClassMark(
            day=day, files=names, through=None if pd.isna(through) else through.isoformat()
        )
    return new_rows, nxt
