"""The alert rules as pure functions (pumpfleet/fleet_alerts.py): hysteresis, the crew's
transitions, hit / miss / false-alarm marking with lead time, and the figures."""

from __future__ import annotations

import pytest

from pumpfleet import fleet_alerts as fa
from pumpfleet.errors import ConflictError, InputError

RULES = fa.AlertRules(open_after=2, clear_after=3, lower_band=0.8, escalate_at=0.9)
H = 3600.0


def run(risks: list[float], threshold: float = 0.5) -> list[fa.Action | None]:
    streak, live, escalated, out = fa.Streak(), False, False, []
    for r in risks:
        streak, action = fa.step(streak, r, threshold, RULES, live, escalated)
        live = (live or action is fa.Action.OPEN) and action is not fa.Action.CLEAR
        escalated = (escalated or action is fa.Action.ESCALATE) and live
        out.append(action)
    return out


def test_one_noisy_window_opens_nothing_two_in_a_row_do() -> None:
    assert run([0.1, 0.7, 0.2, 0.7, 0.3]) == [None] * 5
    assert run([0.1, 0.7, 0.6]) == [None, None, fa.Action.OPEN]


def test_an_open_alert_escalates_once_and_clears_after_three_windows_below_the_band() -> None:
    got = run([0.6, 0.6, 0.95, 0.97, 0.45, 0.3, 0.3, 0.3])
    # 0.45 is inside the band (0.4..0.5): it neither holds the alert up nor clears it
    assert got == [None, fa.Action.OPEN, fa.Action.ESCALATE, None, None, None, None,
                   fa.Action.CLEAR]  # fmt: skip


def test_rules_are_validated() -> None:
    with pytest.raises(InputError, match="lower_band"):
        fa.AlertRules(lower_band=1.5)
    with pytest.raises(InputError, match="open_after"):
        fa.AlertRules(open_after=0)


def test_the_crews_transitions_and_the_illegal_ones() -> None:
    assert fa.transition(fa.OPEN, "ack", 1) == fa.ACKNOWLEDGED
    assert fa.transition(fa.ACKNOWLEDGED, "assign", 1) == fa.ASSIGNED
    assert fa.transition(fa.ASSIGNED, "assign", 1) == fa.ASSIGNED  # handed over
    assert fa.transition(fa.ASSIGNED, "close", 1) == fa.CLOSED
    with pytest.raises(ConflictError, match="alert 7 is closed: it cannot be closed now"):
        fa.transition(fa.CLOSED, "close", 7)
    with pytest.raises(ConflictError, match="is assigned: it cannot be acknowledged"):
        fa.transition(fa.ASSIGNED, "ack", 7)


def test_a_failure_marks_alerts_opened_within_their_horizon_as_hits_with_lead_time() -> None:
    alerts = [
        fa.AlertView(1, opened_at=100 * H, horizon_hours=48, status=fa.CLOSED, outcome=None),
        fa.AlertView(2, opened_at=130 * H, horizon_hours=48, status=fa.OPEN, outcome=None),
        fa.AlertView(3, opened_at=150 * H, horizon_hours=48, status=fa.OPEN, outcome=None),
    ]
    hits, missed = fa.mark_event(alerts, at=148 * H, failure=True)
    # 1 opened 48 h before: inside [T - H, T); 2: 18 h before; 3: after the failure
    assert hits == [fa.Marking(1, fa.HIT, 48.0), fa.Marking(2, fa.HIT, 18.0)]
    assert missed is False
    assert fa.mark_event(alerts, at=99 * H, failure=True) == ([], True)
    assert fa.mark_event(alerts, at=99 * H, failure=False) == ([], False)  # no miss


def test_closed_alerts_become_false_alarms_once_their_horizon_passed() -> None:
    alerts = [
        fa.AlertView(1, 0.0, 48, fa.CLOSED, None),
        fa.AlertView(2, 10 * H, 48, fa.CLOSED, None),
        fa.AlertView(3, 0.0, 48, fa.OPEN, None),
        fa.AlertView(4, 0.0, 48, fa.CLOSED, fa.HIT),
    ]
    assert fa.settle(alerts, now=50 * H) == [fa.Marking(1, fa.FALSE_ALARM, None)]


def test_figures() -> None:
    f = fa.figures([fa.HIT, fa.HIT, fa.FALSE_ALARM, "x"], [10.0, 30.0], misses=2)
    assert (f.hits, f.false_alarms, f.misses) == (2, 1, 2)
    assert f.precision == pytest.approx(2 / 3)
    assert f.median_lead_time_hours == 20.0
    assert fa.figures([], [], 0).precision is None
