"""The rules of the crews' alerts, as pure functions with the clock passed in: when an
alert opens, escalates and clears (hysteresis on a pump's failure risk against its
class's threshold), which transitions a crew may make, how a failure or a maintenance
marks the alerts before it (hit, miss, false alarm, lead time), and the figures of a
fleet's alerts (precision, median lead time). The database side is
:mod:`pumpfleet.fleet_store`.

Definitions (times in unix seconds, ``H`` the alert's failure horizon in hours):

- **hit**: an alert opened in ``[T - H, T)`` before a failure (or a maintenance) at ``T``;
  its lead time is ``(T - opened_at) / 3600`` hours.
- **miss**: a failure at ``T`` with no alert of the pump opened in ``[T - H, T)``.
- **false alarm**: an alert that is closed (by a crew, or expired when the risk cleared)
  and that no failure followed within ``H`` hours of its opening; settled once
  ``opened_at + H`` has passed (or at once, when a crew closes it as a false alarm).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum

from pumpfleet.errors import ConflictError, InputError

OPEN, ACKNOWLEDGED, ASSIGNED, CLOSED = "open", "acknowledged", "assigned", "closed"
STATUSES = (OPEN, ACKNOWLEDGED, ASSIGNED, CLOSED)
HIT, MISS, FALSE_ALARM = "hit", "miss", "false_alarm"
OUTCOMES = (HIT, MISS, FALSE_ALARM)


@dataclass(frozen=True, slots=True)
class AlertRules:
    """Hysteresis: an alert opens after ``open_after`` consecutive windows at or above the
    class's threshold, escalates once when the risk reaches ``escalate_at``, and clears
    after ``clear_after`` consecutive windows below ``lower_band`` times the threshold (an
    alert nobody has taken then expires; a taken one stays for its crew to close)."""

    open_after: int = 2
    clear_after: int = 3
    lower_band: float = 0.8
    escalate_at: float = 0.9

    def __post_init__(self) -> None:
        if self.open_after < 1 or self.clear_after < 1:
            raise InputError("open_after and clear_after: at least 1 window")
        if not 0 < self.lower_band <= 1:
            raise InputError(f"lower_band: in (0, 1], not {self.lower_band}")
        if not 0 < self.escalate_at <= 1:
            raise InputError(f"escalate_at: in (0, 1], not {self.escalate_at}")


@dataclass(frozen=True, slots=True)
class Streak:
    """Consecutive windows above the threshold and below the lower band."""

    above: int = 0
    below: int = 0


class Action(Enum):
    OPEN = "opened"
    ESCALATE = "escalated"
    CLEAR = "cleared"


def step(
    streak: Streak,
    risk: float,
    threshold: float,
    rules: AlertRules,
    open_alert: bool,
    escalated: bool,
) -> tuple[Streak, Action | None]:
    """One scored window of a pump: its new streak, and what happens to its alert."""
    if risk >= threshold:
        streak = Streak(above=streak.above + 1, below=0)
    elif risk < threshold * rules.lower_band:
        streak = Streak(above=0, below=streak.below + 1)
    else:  # inside the band: neither streak goes on
        streak = Streak()
    if not open_alert:
        return streak, Action.OPEN if streak.above >= rules.open_after else None
    if not escalated and risk >= max(rules.escalate_at, threshold):
        return streak, Action.ESCALATE
    if streak.below >= rules.clear_after:
        return streak, Action.CLEAR
    return streak, None


# What a crew may do from each status (ack from open only; assign again to hand over).
_ALLOWED = {
    "ack": {OPEN},
    "assign": {OPEN, ACKNOWLEDGED, ASSIGNED},
    "close": {OPEN, ACKNOWLEDGED, ASSIGNED},
}
_TO = {"ack": ACKNOWLEDGED, "assign": ASSIGNED, "close": CLOSED}


def transition(status: str, action: str, alert_id: int) -> str:
    """The status after a crew's ``action`` (ack, assign, close); a ConflictError (409)
    if the alert's status does not allow it."""
    if action not in _ALLOWED:
        raise InputError(f"action: one of {sorted(_ALLOWED)}, not {action!r}")
    if status not in _ALLOWED[action]:
        raise ConflictError(f"alert {alert_id} is {status}: it cannot be {_TO[action]} now")
    return _TO[action]


@dataclass(frozen=True, slots=True)
class AlertView:
    """What outcome marking needs of an alert."""

    id: int
    opened_at: float
    horizon_hours: float
    status: str
    outcome: str | None
    closed_at: float | None = None


@dataclass(frozen=True, slots=True)
class Marking:
    """An alert's outcome and lead time (hours; hits only)."""

    alert_id: int
    outcome: str
    lead_time_hours: float | None


def mark_event(alerts: Iterable[AlertView], at: float, failure: bool) -> tuple[list[Marking], bool]:
    """A failure (``failure``) or a maintenance at ``at`` of one pump: the alerts it makes
    hits (opened within their horizon before it), and whether it is a miss (a failure no
    alert was opened for in time). A hit overrides an earlier false alarm: the failure
    is the truth."""
    hits = [
        Marking(a.id, HIT, round((at - a.opened_at) / 3600.0, 3))
        for a in alerts
        if at - a.horizon_hours * 3600.0 <= a.opened_at < at and a.outcome != HIT
    ]
    return hits, failure and not hits


def settle(alerts: Iterable[AlertView], now: float) -> list[Marking]:
    """Closed alerts with no outcome whose horizon has passed with no failure: false
    alarms."""
    return [
        Marking(a.id, FALSE_ALARM, None)
        for a in alerts
        if a.status == CLOSED and a.outcome is None and a.opened_at + a.horizon_hours * 3600 <= now
    ]


@dataclass(frozen=True, slots=True)
class Figures:
    """A fleet's alert figures: counts, precision (hits / (hits + false alarms), None with
    neither) and the median lead time of hits in hours (None without hits)."""

    hits: int
    misses: int
    false_alarms: int
    precision: float | None
    median_lead_time_hours: float | None

    def as_dict(self) -> dict[str, float | int | None]:
        return {
            "hits": self.hits,
            "misses": self.misses,
            "false_alarms": self.false_alarms,
            "precision": self.precision,
            "median_lead_time_hours": self.median_lead_time_hours,
        }


def figures(outcomes: Sequence[str], lead_times: Sequence[float], misses: int) -> Figures:
    """The figures of alerts' ``outcomes`` (hit, false_alarm; others ignored), the hits'
    ``lead_times`` and the count of missed failures."""
    hits = sum(o == HIT for o in outcomes)
    false_alarms = sum(o == FALSE_ALARM for o in outcomes)
    precision = hits / (hits + false_alarms) if hits + false_alarms else None
    median = statistics.median(lead_times) if lead_times else None
    return Figures(hits, misses, false_alarms, precision, median)


def risk_order(failure_probability: float | None, rul_hours: float | None) -> tuple[float, float]:
    """The work list's sort key: the riskiest first, then the shortest RUL."""
    return (
        -(failure_probability if failure_probability is not None else -1.0),
        rul_hours if rul_hours is not None else float("inf"),
    )
