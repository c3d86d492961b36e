"""The local scheduler survives: any exception from a run is logged with its traceback and
counted, the other task runs on time, and a task that keeps failing backs off; all on an
injected clock."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pumpfleet.scheduling import (
    MAX_BACKOFF,
    ScheduleState,
    next_due,
    run_schedule,
    state_uri,
)
from pumpfleet.settings import Settings

T0 = datetime(2026, 3, 1, tzinfo=UTC)


class FakeClock:
    """Time moves only when the loop sleeps or a task takes time."""

    def __init__(self) -> None:
        self.now = T0
        self.slept: list[float] = []

    def __call__(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += timedelta(seconds=seconds)

    def hours(self) -> float:
        return (self.now - T0).total_seconds() / 3600


def test_next_due_backs_off_after_the_second_failure_in_a_row() -> None:
    assert next_due(None, 1.0) is None
    assert next_due(T0, 1.0, 0) == T0 + timedelta(hours=1)
    assert next_due(T0, 1.0, 1) == T0 + timedelta(hours=1)  # one failure: on time
    assert next_due(T0, 1.0, 2) == T0 + timedelta(hours=2)
    assert next_due(T0, 1.0, 3) == T0 + timedelta(hours=4)
    assert next_due(T0, 1.0, 10) == T0 + timedelta(hours=MAX_BACKOFF)


def test_any_exception_is_logged_counted_and_the_loop_goes_on(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    runs: dict[str, list[float]] = {"monitor": [], "retrain": []}

    def monitor() -> None:
        runs["monitor"].append(clock.hours())
        clock.now += timedelta(minutes=3)  # a run takes time, then fails
        raise OSError("the MLflow server is gone")  # not a PumpfleetError

    def retrain() -> None:
        runs["retrain"].append(clock.hours())

    with caplog.at_level(logging.ERROR, logger="pumpfleet.scheduling"):
        ran = run_schedule(
            settings,
            {"monitor": 1.0, "retrain": 6.0},
            {"monitor": monitor, "retrain": retrain},
            iterations=400,
            tick_seconds=600,
            clock=clock,
            sleep=clock.sleep,
        )
    # 2^(n-1) hours after each failure, capped at 8 h: 0, 1, 3, 7, 15, 23, 31, ...
    assert runs["monitor"][:7] == [0.0, 1.0, 3.0, 7.0, 15.0, 23.0, 31.0]
    # the other task keeps its own schedule, every 6 h on the hour (the first waited for the
    # failing run of the same tick, 3 minutes)
    assert runs["retrain"][:5] == [0.05, 6.0, 12.0, 18.0, 24.0]
    failed = [r for r in ran if not r["ok"]]
    assert failed[0]["error"] == "OSError: the MLflow server is gone"
    assert [r["failures"] for r in failed[:4]] == [1, 2, 3, 4]
    # each failure logged with its traceback
    records = [r for r in caplog.records if "monitor failed" in r.getMessage()]
    assert len(records) == len(failed) and all(r.exc_info for r in records)
    assert records[0].exc_info is not None and records[0].exc_info[0] is OSError
    state = json.loads(Path(state_uri(settings)).read_text())
    assert state["failures"]["monitor"] == len(failed) == state["failed"]["monitor"]
    assert state["failures"]["retrain"] == 0
    # it never slept past a tick
    assert max(clock.slept) <= 600


def test_a_success_resets_the_backoff_and_a_restart_keeps_it(settings: Settings) -> None:
    clock = FakeClock()
    outcomes = iter([False, False, False, True, True])
    times: list[float] = []

    def flaky() -> None:
        times.append(clock.hours())
        if not next(outcomes):
            raise RuntimeError("flaky")

    run_schedule(settings, {"monitor": 1.0}, {"monitor": flaky}, iterations=3,
                 tick_seconds=3600 * 8, clock=clock, sleep=clock.sleep)  # fmt: skip
    assert times == [0.0, 1.0, 3.0]
    assert ScheduleState.from_json(json.loads(Path(state_uri(settings)).read_text())).failures == {
        "monitor": 3
    }
    # a restarted scheduler waits out the backoff it left: 4 h after the third failure
    clock.now = T0 + timedelta(hours=5)
    assert run_schedule(settings, {"monitor": 1.0}, {"monitor": flaky}, iterations=1,
                        clock=clock, sleep=clock.sleep) == []  # fmt: skip
    clock.now = T0 + timedelta(hours=7)
    run_schedule(settings, {"monitor": 1.0}, {"monitor": flaky}, iterations=2,
                 tick_seconds=3600 * 8, clock=clock, sleep=clock.sleep)  # fmt: skip
    assert times == [0.0, 1.0, 3.0, 7.0, 8.0]  # back to every hour after the success


def test_the_older_state_file_is_read(settings: Settings) -> None:
    old = {"monitor": (T0 - timedelta(minutes=30)).isoformat(), "retrain": None}
    state = ScheduleState.from_json(old)
    assert state.last == {"monitor": T0 - timedelta(minutes=30), "retrain": None}
    assert state.failures == {}
