"""Staged rollouts of a bundle across one class's devices, as a pure policy: the plan
and the state in, the devices' latest reports and the time in; the new state and what
happened out (:func:`advance`). Nothing here reads a file or a clock.

A rollout starts with its canaries (named devices, or a share of the class), then
widens in waves (cumulative shares of the class's devices), each after every device of
the waves so far runs the bundle (``ready`` share of them) and a soak time has passed.
It halts by itself where the devices it reached say the bundle is bad (abort criteria):

- self-test failures of the bundle (a device refused it before switching);
- probation rollbacks (a device switched and went back by itself);
- an alarm-rate jump: alerts per window on the bundle against the class's devices not
  on it, since the rollout began;
- the upload error rate of the devices it reached.

Which devices are in which wave is fixed when the wave starts: a device seen later
joins the next wave (or the bundle, once the rollout completed).
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Status = Literal["running", "halted", "completed"]


class AbortCriteria(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_self_test_failures: int = Field(default=0, ge=0)
    max_rollbacks: int = Field(default=0, ge=0)
    # Halt when the alert rate on the bundle reaches this many times the rate off it
    # (and at least min_alarm_rate), over at least min_windows windows on it.
    alarm_rate_jump: float = Field(default=3.0, gt=1)
    min_alarm_rate: float = Field(default=0.05, ge=0, le=1)
    min_windows: int = Field(default=50, ge=1)
    # Halt when more than this share of the devices reached say their last upload failed.
    max_upload_error_rate: float = Field(default=0.5, ge=0, le=1)


class Target(BaseModel):
    """A bundle as a rollout hands it out."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bundle: str = Field(pattern=r"^v\d+(-anomaly-v\d+)?$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    release: int | None = None
    file: str  # where the cloud keeps it (served to devices at /v1/edge/bundles/<id>)


class Plan(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rollout_id: str = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")
    pump_class: str
    target: Target
    # The bundle the class ran before, where known: a halted rollout sends the devices
    # it reached back to it.
    previous: Target | None = None
    canary: list[str] = Field(default_factory=list)
    canary_percent: float = Field(default=5.0, gt=0, le=100)
    waves: list[float] = Field(default_factory=lambda: [25.0, 100.0], min_length=1)
    soak_seconds: float = Field(default=3600.0, ge=0)
    ready: float = Field(default=0.9, gt=0, le=1)
    abort: AbortCriteria = Field(default_factory=AbortCriteria)

    @model_validator(mode="after")
    def _waves_grow_to_all(self) -> Plan:
        if any(b <= a for a, b in zip(self.waves, self.waves[1:], strict=False)):
            raise ValueError("waves are cumulative shares: each above the one before")
        if self.waves[-1] != 100:
            raise ValueError("the last wave must reach 100 (percent of the class)")
        return self


class Report(BaseModel):
    """What the cloud knows of a device from its latest upload (its health)."""

    device_id: str
    pump_class: str | None = None
    site: str | None = None
    bundle: str | None = None
    bad_bundles: list[str] = Field(default_factory=list)
    self_test: dict[str, Any] | None = None
    alerts: int = 0
    scored: int = 0
    upload_error: bool = False
    last_seen: float = 0.0


class State(BaseModel):
    status: Status = "running"
    wave: int = 0  # 0: the canaries; i: waves[i - 1]
    wave_started: float
    ready_since: float | None = None
    members: dict[str, int] = Field(default_factory=dict)  # device → its wave
    # Counters (alerts, scored) of each device when the rollout began, and of each when
    # it was first seen on the bundle: the alarm rates are taken since then.
    baseline: dict[str, tuple[int, int]] = Field(default_factory=dict)
    adopted: dict[str, tuple[int, int]] = Field(default_factory=dict)
    reason: str | None = None
    events: list[dict[str, Any]] = Field(default_factory=list)


def order(rollout_id: str, devices: list[str]) -> list[str]:
    """The class's devices in the rollout's order (stable, spread over sites)."""
    return sorted(devices, key=lambda d: hashlib.sha256(f"{rollout_id}:{d}".encode()).hexdigest())


def _share(percent: float, n: int) -> int:
    return min(n, max(1, math.ceil(percent / 100 * n))) if n else 0


def _join(plan: Plan, state: State, devices: list[str], wave: int) -> dict[str, int]:
    """The members once ``wave`` starts: the devices its share reaches, in order, that
    are not members yet."""
    members = dict(state.members)
    ordered = [d for d in order(plan.rollout_id, devices) if d not in members]
    if wave == 0:
        named = [d for d in plan.canary if d in devices]
        chosen = named or ordered[: _share(plan.canary_percent, len(devices))]
    else:
        chosen = ordered[: max(0, _share(plan.waves[wave - 1], len(devices)) - len(members))]
    members |= dict.fromkeys(chosen, wave)
    return members


def start(plan: Plan, reports: dict[str, Report], now: float) -> State:
    """A rollout's first state: its canaries chosen among the class's devices."""
    devices = [d for d, r in reports.items() if r.pump_class == plan.pump_class]
    state = State(
        wave_started=now, baseline={d: (reports[d].alerts, reports[d].scored) for d in devices}
    )
    state.members = _join(plan, state, devices, 0)
    state.events.append({"at": now, "what": f"started: canaries {sorted(state.members)}"})
    return state


def _rate(pairs: list[tuple[int, int]]) -> tuple[float, int]:
    alerts, windows = sum(a for a, _ in pairs), sum(w for _, w in pairs)
    return (alerts / windows if windows else 0.0), windows


def abort_reason(plan: Plan, state: State, reports: dict[str, Report]) -> str | None:
    """Why the rollout must halt now (None: it need not)."""
    target, crit = plan.target.bundle, plan.abort
    reached = [reports[d] for d in state.members if d in reports]
    failed = [
        r for r in reached
        if r.self_test and r.self_test.get("bundle") == target and not r.self_test.get("ok")
    ]  # fmt: skip
    if len(failed) > crit.max_self_test_failures:
        detail = str((failed[0].self_test or {}).get("detail", ""))
        return (
            f"self-test failed on {len(failed)} of {len(reached)} devices reached "
            f"({failed[0].device_id}: {detail})"
        )
    back = [r for r in reached if target in r.bad_bundles and r not in failed]
    if len(back) > crit.max_rollbacks:
        return f"{len(back)} of {len(reached)} devices reached rolled {target} back"
    on = [
        (r.alerts - state.adopted[r.device_id][0], r.scored - state.adopted[r.device_id][1])
        for r in reached
        if r.bundle == target and r.device_id in state.adopted
    ]
    off = [
        (r.alerts - state.baseline.get(d, (0, 0))[0], r.scored - state.baseline.get(d, (0, 0))[1])
        for d, r in reports.items()
        if r.pump_class == plan.pump_class and r.bundle != target
    ]
    rate_on, n_on = _rate(on)
    rate_off, _ = _rate(off)
    if (
        n_on >= crit.min_windows
        and rate_on >= crit.min_alarm_rate
        and rate_on >= crit.alarm_rate_jump * rate_off
    ):
        return (
            f"alarm rate {rate_on:.1%} over {n_on} windows on {target}, "
            f"{rate_off:.1%} off it (limit {crit.alarm_rate_jump:g}x)"
        )
    erring = [r for r in reached if r.upload_error]
    if reached and len(erring) / len(reached) > crit.max_upload_error_rate:
        return f"uploads failing on {len(erring)} of {len(reached)} devices reached"
    return None


def advance(
    plan: Plan, state: State, reports: dict[str, Report], now: float
) -> tuple[State, list[str]]:
    """One step of the policy: halt on an abort criterion, else move to the next wave
    once the waves so far run the bundle and have soaked (or complete). Returns the new
    state and what happened (empty: nothing)."""
    if state.status != "running":
        return state, []
    s = state.model_copy(deep=True)
    for d in s.members:
        r = reports.get(d)
        if r is not None and r.bundle == plan.target.bundle and d not in s.adopted:
            s.adopted[d] = (r.alerts, r.scored)
    said: list[str] = []
    why = abort_reason(plan, s, reports)
    if why is not None:
        s.status, s.reason = "halted", why
        said.append(f"halted in wave {s.wave}: {why}")
    else:
        on = sum(1 for d in s.members if d in s.adopted)
        if on >= math.ceil(plan.ready * len(s.members)):
            s.ready_since = s.ready_since if s.ready_since is not None else now
        else:
            s.ready_since = None
        if s.ready_since is not None and now - s.ready_since >= plan.soak_seconds:
            said.append(_widen(plan, s, reports, now))
    s.events += [{"at": now, "what": w} for w in said]
    return s, said


def _widen(plan: Plan, s: State, reports: dict[str, Report], now: float) -> str:
    """Start the next wave that reaches a device not reached yet (in place), or complete
    the rollout when every device of the class runs the bundle; what happened."""
    devices = [d for d, r in reports.items() if r.pump_class == plan.pump_class]
    while not (s.wave >= len(plan.waves) and all(d in s.members for d in devices)):
        before = len(s.members)
        s.wave = min(s.wave + 1, len(plan.waves))
        s.members = _join(plan, s, devices, s.wave)
        if len(s.members) > before:  # a wave that reaches no one new is passed over
            s.wave_started, s.ready_since = now, None
            return f"wave {s.wave}: {len(s.members)} of {len(devices)} devices"
    s.status = "completed"
    return f"completed: {len(s.members)} devices run {plan.target.bundle}"


def assigned(plan: Plan, state: State, device_id: str) -> tuple[Target | None, bool]:
    """The bundle a device should run under this rollout, and whether as a rollback:
    the target for a member (for every device once completed), the previous bundle for
    a member of a halted rollout, and None (keep what it runs) otherwise."""
    member = device_id in state.members
    if state.status == "completed" or (state.status == "running" and member):
        return plan.target, False
    if state.status == "halted" and member and plan.previous is not None:
        return plan.previous, True
    return None, False
