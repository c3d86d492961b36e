"""Retraining and monitoring on a schedule, as one small local loop (a cluster uses the
CronJob in ``cluster/k8s`` instead). Each tick runs what is due; the last run of each task
and its failures in a row are kept in the workspace, so a restarted scheduler does not run
everything again and a failing task keeps backing off.

Any exception from a run (a domain error, MLflow, Ray, the disk) is logged with its
traceback and counted, and the loop goes on: the next run comes at its usual time after
one failure, and each further failure in a row doubles the wait (``MAX_BACKOFF`` times
the interval at most), so a broken dependency is not hammered. A success resets it.

    pumpfleet schedule --retrain-every-hours 24 --monitor-every-hours 1
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pumpfleet import storage
from pumpfleet.settings import Settings

log = logging.getLogger(__name__)

Task = Callable[[], Any]
# A task that failed n times in a row waits 2^(n-1) intervals, at most this many.
MAX_BACKOFF = 8


def state_uri(settings: Settings) -> str:
    return storage.join(settings.workspace_uri, "monitor", "schedule.json")


@dataclass
class ScheduleState:
    """When each task last ran, how many of its runs failed in a row, and in all."""

    last: dict[str, datetime | None] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)  # in a row; 0 after a success
    failed: dict[str, int] = field(default_factory=dict)  # every failure, ever

    def to_json(self) -> dict[str, Any]:
        return {
            "last": {t: v.isoformat() if v else None for t, v in sorted(self.last.items())},
            "failures": dict(sorted(self.failures.items())),
            "failed": dict(sorted(self.failed.items())),
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> ScheduleState:
        """The state file, also as an older version wrote it (task → last run)."""
        last = raw["last"] if isinstance(raw.get("last"), Mapping) else raw
        return cls(
            {t: datetime.fromisoformat(v) if v else None for t, v in last.items()},
            {t: int(n) for t, n in (raw.get("failures") or {}).items()},
            {t: int(n) for t, n in (raw.get("failed") or {}).items()},
        )


def next_due(last: datetime | None, every_hours: float, failures: int = 0) -> datetime | None:
    """When a task is next due (None: now, it never ran): ``every_hours`` after its last
    run, doubled for each failure in a row after the first, up to ``MAX_BACKOFF`` (pure)."""
    if last is None:
        return None
    factor = min(2 ** max(failures - 1, 0), MAX_BACKOFF)
    return last + timedelta(hours=every_hours * factor)


def due_tasks(
    last: Mapping[str, datetime | None],
    every_hours: Mapping[str, float],
    now: datetime,
    failures: Mapping[str, int] | None = None,
) -> list[str]:
    """The tasks whose (backed-off) interval has passed since their last run (pure)."""
    out = []
    for t, h in sorted(every_hours.items()):
        due = next_due(last.get(t), h, (failures or {}).get(t, 0))
        if due is None or now >= due:
            out.append(t)
    return out


def _seconds_to_next(
    state: ScheduleState, every_hours: Mapping[str, float], now: datetime
) -> float:
    dues = [
        next_due(state.last.get(t), h, state.failures.get(t, 0)) for t, h in every_hours.items()
    ]
    return min(((d - now).total_seconds() for d in dues if d is not None), default=0.0)


def run_once(name: str, task: Task, state: ScheduleState, now: datetime) -> dict[str, Any]:
    """Run one task; any exception is logged with its traceback and counted, never
    raised (KeyboardInterrupt and SystemExit still stop the loop)."""
    log.info("schedule: running %s", name)
    try:
        task()
    except Exception as e:
        state.failures[name] = state.failures.get(name, 0) + 1
        state.failed[name] = state.failed.get(name, 0) + 1
        n = state.failures[name]
        log.exception("schedule: %s failed (%d in a row)", name, n)
        error = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
        return {"task": name, "at": now.isoformat(), "ok": False, "error": error, "failures": n}
    finally:
        state.last[name] = now  # the next run counts from when this one was due
    state.failures[name] = 0
    return {"task": name, "at": now.isoformat(), "ok": True, "failures": 0}


def run_schedule(
    settings: Settings,
    every_hours: Mapping[str, float],
    tasks: Mapping[str, Task],
    iterations: int | None = None,
    tick_seconds: float = 60.0,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    sleep: Callable[[float], None] = time.sleep,
) -> list[dict[str, Any]]:
    """Tick ``iterations`` times (forever if None); at each tick run the due tasks, then
    sleep until the next is due (``tick_seconds`` at most). A failed run never stops the
    loop (see the module's docstring). Returns what ran."""
    uri = state_uri(settings)
    state = (
        ScheduleState.from_json(storage.read_json(uri)) if storage.exists(uri) else ScheduleState()
    )
    ran: list[dict[str, Any]] = []
    i = 0
    while iterations is None or i < iterations:
        now = clock()
        for name in due_tasks(state.last, every_hours, now, state.failures):
            ran.append(run_once(name, tasks[name], state, now))
            storage.write_json(uri, state.to_json())
        i += 1
        if iterations is None or i < iterations:
            # from the tick's time: a run's own length makes the next at most a tick late
            sleep(min(tick_seconds, max(_seconds_to_next(state, every_hours, now), 0.0)))
    return ran
