"""Starting retraining jobs from the monitor and the scheduler: the trigger state in a
JSON file in the workspace, one retrain job per class that wants one (submitted to a
:class:`RetrainServer`; the Ray job server's is ``ray_jobs.triggers.JobServer``), and the
count of rows that arrived since a snapshot. The decisions themselves are in
``pumpfleet.alerts``.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

from pumpfleet import storage
from pumpfleet.alerts import AlertPolicy, Trigger, TriggerState, decide_retrains, record_started
from pumpfleet.settings import Settings, get_settings
from pumpfleet.snapshot import Snapshot

log = logging.getLogger(__name__)

ALL = "*"  # a running job without --classes retrains every class
# Failures of the job server's HTTP API: requests' errors are OSErrors, Ray's client
# raises ConnectionError or RuntimeError ("Failed to connect", "Request failed").
UNREACHABLE = (OSError, RuntimeError)


def jobs_address(explicit: str | None = None, settings: Settings | None = None) -> str | None:
    """The Ray job server (dashboard URL): the flag, else ``settings.jobs_address``
    (``PUMPFLEET_JOBS_ADDRESS``, which the Serve admin route reads too)."""
    return explicit or (settings if settings is not None else get_settings()).jobs_address


def state_uri(settings: Settings) -> str:
    return storage.join(settings.workspace_uri, "monitor", "triggers.json")


def load_state(settings: Settings) -> TriggerState:
    uri = state_uri(settings)
    return TriggerState.from_json(storage.read_json(uri) if storage.exists(uri) else None)


def save_state(settings: Settings, state: TriggerState) -> None:
    storage.write_json(state_uri(settings), state.to_json())


def retrain_classes(entrypoint: str, metadata: Mapping[str, str] | None = None) -> set[str]:
    """The classes a retrain job works on, from its metadata or its ``--classes``."""
    meta = (metadata or {}).get("classes")
    if meta is not None:
        return set(meta.split(",")) if meta else {ALL}
    words = shlex.split(entrypoint)
    if "--classes" not in words:
        return {ALL}
    out = set()
    for w in words[words.index("--classes") + 1 :]:
        if w.startswith("--"):
            break
        out.add(w)
    return out


class RetrainServer(Protocol):
    """Where retrain jobs go: what is running, and a new one for some classes."""

    address: str

    def running_classes(self) -> set[str]:
        """Classes with a retrain job pending or running (``*``: one retrains them all)."""
        ...

    def submit(self, classes: list[str], reason: str) -> str:
        """Submit a retrain of ``classes``; returns the job's id."""
        ...


def start_retrains(
    settings: Settings,
    wanted: Mapping[str, str],
    policy: AlertPolicy,
    now: datetime,
    server: RetrainServer | None,
) -> dict[str, Any]:
    """Decide (pure) and submit one retrain job per class that wants one to ``server``
    (None: no job server configured); the started ones are recorded in the state file.
    Never raises for an unreachable job server: it says so once and submits nothing."""
    if not wanted:
        return {"triggers": [], "message": None}
    if server is None:
        decisions = [
            Trigger(c, False, f"{why}; no job server (--jobs-address) to submit to")
            for c, why in sorted(wanted.items())
        ]
        return {"triggers": [vars(t) for t in decisions], "message": None}
    try:
        running = server.running_classes()
    except UNREACHABLE as e:
        msg = f"job server at {server.address} unreachable ({_first(e)}); no retrain submitted"
        log.warning(msg)
        skipped = [Trigger(c, False, f"{why}; {msg}") for c, why in sorted(wanted.items())]
        return {"triggers": [vars(t) for t in skipped], "message": msg}
    state = load_state(settings)
    if ALL in running:
        running |= set(wanted)
    decisions = decide_retrains(wanted, running, state, now, policy)
    started: dict[str, str] = {}
    out, message = [], None
    for t in decisions:
        if t.start and message is None:
            try:
                started[t.pump_class] = server.submit([t.pump_class], t.reason)
            except UNREACHABLE as e:
                message = f"submitting to {server.address} failed ({_first(e)}); stopped"
                log.warning(message)
                t = Trigger(t.pump_class, False, f"{t.reason}; {message}")
        elif t.start:
            t = Trigger(t.pump_class, False, f"{t.reason}; {message}")
        out.append({**vars(t), "job_id": started.get(t.pump_class)})
    if started:
        save_state(settings, record_started(state, started, now))
        log.info("retrain jobs submitted: %s", started)
    return {"triggers": out, "message": message}


def _first(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def readings_rows(source: str) -> int:
    """Rows in a fleet dataset's readings, from the Parquet footers (no data read)."""
    import pyarrow.parquet as pq

    fs, _ = storage.resolve(source)
    total = 0
    for f in storage.list_files(storage.join(source, "readings"), ".parquet"):
        with fs.open_input_file(f) as fh:
            total += pq.ParquetFile(fh).metadata.num_rows
    return total


def rows_since(snapshot: Snapshot, default_source: str) -> int:
    """Rows in the fleet the snapshot was ingested from (as its manifest records it;
    ``default_source`` for a snapshot that records none) beyond those it was made of."""
    summary = snapshot.manifest.get("summary", {})
    return readings_rows(summary.get("source") or default_source) - int(summary.get("rows_in", 0))
