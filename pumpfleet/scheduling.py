"""Retraining and monitoring on a schedule, as one small local loop (a cluster uses the
CronJob in ``cluster/k8s`` instead). Each tick runs what is due; the last run of each task
is kept in the workspace, so a restarted scheduler does not run everything again.

    pumpfleet schedule --retrain-every-hours 24 --monitor-every-hours 1
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from pumpfleet import storage
from pumpfleet.alerts import schedule_due
from pumpfleet.errors import PumpfleetError
from pumpfleet.settings import Settings

log = logging.getLogger(__name__)

Task = Callable[[], Any]


def state_uri(settings: Settings) -> str:
    return storage.join(settings.workspace_uri, "monitor", "schedule.json")


def due_tasks(
    last: Mapping[str, datetime | None], every_hours: Mapping[str, float], now: datetime
) -> list[str]:
    """The tasks whose interval has passed since their last run (pure)."""
    return [t for t, h in sorted(every_hours.items()) if schedule_due(last.get(t), now, h)]


def run_schedule(
    settings: Settings,
    every_hours: Mapping[str, float],
    tasks: Mapping[str, Task],
    iterations: int | None = None,
    tick_seconds: float = 60.0,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    sleep: Callable[[float], None] = time.sleep,
) -> list[dict[str, Any]]:
    """Tick ``iterations`` times (forever if None); at each tick run the due tasks. A task
    that fails with a domain error is logged and retried at its next due time, never
    stopping the loop. Returns what ran."""
    uri = state_uri(settings)
    raw = storage.read_json(uri) if storage.exists(uri) else {}
    last: dict[str, datetime | None] = {
        t: datetime.fromisoformat(v) if v else None for t, v in raw.items()
    }
    ran: list[dict[str, Any]] = []
    i = 0
    while iterations is None or i < iterations:
        now = clock()
        for name in due_tasks(last, every_hours, now):
            log.info("schedule: running %s", name)
            try:
                tasks[name]()
                ran.append({"task": name, "at": now.isoformat(), "ok": True})
            except PumpfleetError as e:
                log.error("schedule: %s failed: %s", name, e)
                ran.append({"task": name, "at": now.isoformat(), "ok": False, "error": str(e)})
            last[name] = now  # a failure waits for its next turn too: no retry storm
            storage.write_json(uri, {t: v.isoformat() if v else None for t, v in last.items()})
        i += 1
        if iterations is None or i < iterations:
            sleep(tick_seconds)
    return ran
