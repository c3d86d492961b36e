"""The monitor's decisions, as pure functions with state in and out and the clock injected:
drift alerts with hysteresis, and when a retraining job may start (on drift, on a
schedule, on new data).

A class alerts after ``consecutive`` drifted chunks in a row and clears after
``clear_after`` clean chunks in a row, so one noisy chunk neither raises nor clears an
alert. A retrain is started for an alerting class only when none is running for it and
the last one started at least ``cooldown_hours`` ago: a monitor run every few minutes
over a drifted fleet starts one job, not one per run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field


class AlertPolicy(BaseModel):
    """How many chunks make an alert, and how often a class may be retrained."""

    consecutive: int = Field(default=2, ge=1)  # drifted chunks in a row that raise an alert
    clear_after: int = Field(default=2, ge=1)  # clean chunks in a row that clear it
    cooldown_hours: float = Field(default=24.0, ge=0)  # between two retrains of one class
    new_data_rows: int | None = Field(default=None, ge=1)  # retrain after this many new rows


@dataclass(frozen=True)
class Episode:
    """An alert: raised at chunk ``raised`` (the drift began at ``began``), cleared at
    chunk ``cleared`` (None: still on)."""

    began: int
    raised: int
    cleared: int | None = None


@dataclass(frozen=True)
class ClassAlert:
    pump_class: str
    active: bool
    episodes: tuple[Episode, ...] = ()

    @property
    def first_raised(self) -> int | None:
        return self.episodes[0].raised if self.episodes else None


def alarm_bound(n: int, expected_rate: float, alpha: float) -> int:
    """The fewest alarms among ``n`` windows that count as too many: a rate of
    ``expected_rate`` reaches it with probability at most ``alpha`` (binomial tail), so
    a chunk that the expected rate explains alerts once in ``1 / alpha`` chunks at most."""
    from scipy.stats import binom

    if n <= 0:
        return 1
    # isf gives the largest k with P(X > k) > alpha, plus one: the first k with tail <= alpha
    return int(binom.isf(alpha, n, expected_rate)) + 1


def hysteresis(pump_class: str, drifted: Sequence[bool], policy: AlertPolicy) -> ClassAlert:
    """Walk the chunks in time order: ``consecutive`` drifted chunks raise an alert,
    ``clear_after`` clean ones clear it."""
    episodes: list[Episode] = []
    active = False
    run = 0  # length of the current run of chunks that disagree with the state
    start = 0
    for i, d in enumerate(drifted):
        if d != active:
            if run == 0:
                start = i
            run += 1
        else:
            run = 0
        if not active and run >= policy.consecutive:
            episodes.append(Episode(began=start, raised=i))
            active, run = True, 0
        elif active and run >= policy.clear_after:
            last = episodes[-1]
            episodes[-1] = Episode(last.began, last.raised, cleared=i)
            active, run = False, 0
    return ClassAlert(pump_class, active, tuple(episodes))


@dataclass
class TriggerState:
    """What the trigger remembers between monitor runs (kept in a JSON file)."""

    last_retrain: dict[str, datetime] = field(default_factory=dict)
    last_job: dict[str, str] = field(default_factory=dict)
    last_scheduled: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "last_retrain": {c: t.isoformat() for c, t in sorted(self.last_retrain.items())},
            "last_job": dict(sorted(self.last_job.items())),
            "last_scheduled": self.last_scheduled.isoformat() if self.last_scheduled else None,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any] | None) -> TriggerState:
        obj = obj or {}
        sched = obj.get("last_scheduled")
        return cls(
            last_retrain={
                c: datetime.fromisoformat(t) for c, t in (obj.get("last_retrain") or {}).items()
            },
            last_job=dict(obj.get("last_job") or {}),
            last_scheduled=datetime.fromisoformat(sched) if sched else None,
        )


@dataclass(frozen=True)
class Trigger:
    pump_class: str
    start: bool
    reason: str


def decide_retrains(
    wanted: Mapping[str, str],
    running: set[str],
    state: TriggerState,
    now: datetime,
    policy: AlertPolicy,
) -> list[Trigger]:
    """For each class that wants a retrain (class → why), start one unless a job is
    running for it or it is cooling down. Pure: the caller records the started ones."""
    out = []
    cooldown = timedelta(hours=policy.cooldown_hours)
    for cls, why in sorted(wanted.items()):
        last = state.last_retrain.get(cls)
        if cls in running:
            out.append(Trigger(cls, False, f"{why}; a retrain job is already running"))
        elif last is not None and now - last < cooldown:
            left = (last + cooldown - now).total_seconds() / 3600
            out.append(Trigger(cls, False, f"{why}; cooling down ({left:.1f} h left)"))
        else:
            out.append(Trigger(cls, True, why))
    return out


def record_started(state: TriggerState, started: Mapping[str, str], now: datetime) -> TriggerState:
    """The state after retrain jobs were started (class → job id)."""
    return TriggerState(
        last_retrain={**state.last_retrain, **dict.fromkeys(started, now)},
        last_job={**state.last_job, **started},
        last_scheduled=state.last_scheduled,
    )


def drift_wanted(
    alerts: Mapping[str, ClassAlert], features: Mapping[str, list[str]]
) -> dict[str, str]:
    """Classes whose alert is on, with a reason naming the drifted features."""
    return {
        c: f"drift on {c}: {', '.join(features.get(c, [])) or 'multivariate'}"
        for c, a in alerts.items()
        if a.active
    }


def new_data_due(rows_now: int, rows_at_snapshot: int, policy: AlertPolicy) -> bool:
    """True when the fleet gained at least ``policy.new_data_rows`` rows since the
    champion's snapshot (never when the threshold is unset)."""
    if policy.new_data_rows is None:
        return False
    return rows_now - rows_at_snapshot >= policy.new_data_rows


def schedule_due(last: datetime | None, now: datetime, every_hours: float) -> bool:
    """True when a scheduled run is due: never ran, or ran ``every_hours`` ago or more."""
    return last is None or now - last >= timedelta(hours=every_hours)
