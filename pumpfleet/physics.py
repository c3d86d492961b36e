"""Pump physics for the simulator, coarse but with the right shape: flow follows speed,
head follows speed squared and power (current, heat) speed cubed (the pump affinity
laws). Each class fails in its own ways, and each failure mode leaves its own signature
(:data:`SIGNATURES`) that grows as health declines: a level shift and, for some modes,
a swing, either cycling (gas slugs come and go) or noisy (cavitation)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pumpfleet.schema import CHANNEL_NAMES


@dataclass(frozen=True)
class Signature:
    """How a failure mode moves the channels at full degradation (``deg`` = 1); at
    lower degradation every effect is ``deg`` times as large.

    ``level``: the relative change of a channel's level (for ``motor_temp``, of its rise
    over ambient). ``swing``: the amplitude of a relative swing about that level, at most
    0.2 so that a swing is never mistaken for a sensor spike (twice the local median).
    ``cycling``: the share of the swing that is a slow cycle of a few hours, the rest
    being step-to-step noise.
    """

    level: dict[str, float]
    swing: dict[str, float] = field(default_factory=dict)
    cycling: float = 0.0


SIGNATURES: dict[str, Signature] = {
    # Worn bearings shake, rub (heat) and drag (current).
    "bearing_wear": Signature(
        {"vibration": 2.5, "motor_temp": 0.3, "motor_current": 0.1},
    ),
    # Rod pumps: the same wear, in the pumping unit's gearbox.
    "gearbox_wear": Signature(
        {"vibration": 2.5, "motor_temp": 0.2, "motor_current": 0.15},
    ),
    # Fluid recirculates past a failed seal: less head, less flow.
    "seal_leak": Signature(
        {"intake_pressure": 0.15, "discharge_pressure": -0.25, "flow": -0.3},
    ),
    # Leakage current and hot spots in the windings.
    "motor_insulation": Signature({"motor_temp": 0.5, "motor_current": 0.35}),
    # Free gas at the intake: the pump loses prime and regains it, so current and flow
    # fall and cycle; less liquid passes the motor, which runs hot.
    "gas_lock": Signature(
        {
            "intake_pressure": -0.5,
            "discharge_pressure": -0.2,
            "motor_current": -0.3,
            "flow": -0.4,
            "motor_temp": 0.4,
        },
        swing={"motor_current": 0.2, "flow": 0.2, "discharge_pressure": 0.1},
        cycling=0.7,
    ),
    # Produced sand wears the stages away: more friction and shaking, less lift.
    "sand_erosion": Signature(
        {
            "vibration": 1.5,
            "motor_current": 0.25,
            "motor_temp": 0.2,
            "discharge_pressure": -0.3,
            "flow": -0.3,
        },
    ),
    # PCP: the worn elastomer loses its seal on the rotor, so fluid slips back (less
    # flow and head) and the rotor turns with less torque (less current).
    "stator_wear": Signature(
        {"discharge_pressure": -0.35, "flow": -0.45, "motor_current": -0.25},
    ),
    # Rod pump: a leaking traveling valve lets the lifted fluid slip back, lightening
    # the upstroke load.
    "traveling_valve_leak": Signature(
        {"flow": -0.5, "discharge_pressure": -0.15, "motor_current": -0.15},
    ),
    # Rod pump: cracked, stretching rods load the unit unevenly from stroke to stroke.
    "rod_fatigue": Signature(
        {"vibration": 1.2, "motor_current": 0.1, "flow": -0.1},
        swing={"vibration": 0.2, "motor_current": 0.2},
        cycling=0.5,
    ),
    # Centrifugal: the intake pressure falls short of the fluid's vapour pressure;
    # collapsing bubbles shake the pump and make head and flow unsteady.
    "cavitation": Signature(
        {
            "intake_pressure": -0.6,
            "vibration": 2.0,
            "discharge_pressure": -0.2,
            "flow": -0.2,
            "motor_current": -0.1,
        },
        swing={"vibration": 0.2, "discharge_pressure": 0.15, "flow": 0.15, "motor_current": 0.1},
    ),
}


@dataclass(frozen=True)
class ClassParams:
    speed: float  # nominal speed setpoint
    regimes: tuple[float, ...]  # operating regimes, as fractions of nominal speed
    # Channel baselines at nominal speed on a healthy pump, in CHANNEL_NAMES order.
    base: tuple[float, float, float, float, float, float]
    life_days: tuple[float, float]  # range of run lives between failures
    modes: tuple[str, ...]  # the ways this class fails, keys of SIGNATURES
    # The P-F interval: how long before its failure a pump's fault starts to show (the
    # potential-failure point); before that it runs as new.
    pf_days: tuple[float, float] = (7.0, 12.0)


CLASS_PARAMS: dict[str, ClassParams] = {
    "esp": ClassParams(
        60.0,
        (0.8, 0.9, 1.0),
        (60.0, 180.0, 95.0, 2.0, 45.0, 900.0),
        (10, 35),
        ("bearing_wear", "seal_leak", "motor_insulation", "gas_lock", "sand_erosion"),
    ),
    "rod": ClassParams(
        8.0,
        (0.75, 1.0),
        (0.0, 40.0, 70.0, 4.0, 30.0, 120.0),
        (15, 45),
        ("traveling_valve_leak", "rod_fatigue", "gearbox_wear", "motor_insulation"),
    ),
    "pcp": ClassParams(
        300.0,
        (0.7, 0.85, 1.0),
        (20.0, 90.0, 80.0, 0.0, 60.0, 400.0),
        (12, 40),
        ("bearing_wear", "stator_wear", "sand_erosion", "gas_lock"),
    ),
    "centrifugal": ClassParams(
        3000.0,
        (0.85, 1.0),
        (5.0, 25.0, 65.0, 1.5, 120.0, 2500.0),
        (15, 50),
        ("bearing_wear", "seal_leak", "motor_insulation", "cavitation"),
    ),
}

# The failure modes of each pump class, as the events table names them.
FAILURE_MODES: dict[str, tuple[str, ...]] = {c: p.modes for c, p in CLASS_PARAMS.items()}


def health(
    rng: np.random.Generator,
    n: int,
    life_steps: tuple[float, float],
    modes: tuple[str, ...],
    pf_steps: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray, list[int], list[int], list[str]]:
    """Degradation in [0, 1] per step, failure mode per step (an index into ``modes``),
    and the event indices with the mode of each failure.

    Each life follows a P-F curve: no degradation until the potential-failure point, a
    P-F interval (``pf_steps``) before the failure, then a rise to 1 at the failure
    (``((age - onset) / pf) ** 1.5``). A fault that grew from the start of every life
    would make a pump's state say little about when it fails (the same wear at a third
    of a short life and of a long one) and put worn pumps among the windows that count
    as normal, a week or more from their failure."""
    deg = np.zeros(n)
    mode = np.zeros(n, dtype=np.int64)
    failures: list[int] = []
    maint: list[int] = []
    failure_modes: list[str] = []
    t = 0
    first = True
    while t < n:
        life = rng.uniform(*life_steps)
        pf = min(life, rng.uniform(*pf_steps))
        onset = life - pf
        m = int(rng.integers(len(modes)))
        age = rng.uniform(0, 0.8 * life) if first else 0.0
        first = False
        # One cycle may hold a maintenance visit that takes some of the wear back.
        visit = rng.uniform(0.3, 0.7) * life if rng.random() < 0.3 else None
        while t < n:
            stop = visit if visit is not None and age < visit else life
            k = min(n - t, max(1, int(np.ceil(stop - age))))
            ages = age + np.arange(k)
            deg[t : t + k] = np.clip((ages - onset) / pf, 0.0, 1.0) ** 1.5
            mode[t : t + k] = m
            t += k
            age += k
            if stop is visit and age >= stop:
                maint.append(t - 1)
                age *= 0.4
                visit = None
                continue
            if age >= life:
                failures.append(t - 1)
                failure_modes.append(modes[m])
            break
    return deg, mode, failures, maint, failure_modes


def speed(rng: np.random.Generator, n: int, regimes: tuple[float, ...]) -> np.ndarray:
    out = np.empty(n)
    t = 0
    while t < n:
        k = int(rng.integers(72, 240))
        out[t : t + k] = regimes[int(rng.integers(len(regimes)))]
        t += k
    return out


@dataclass(frozen=True)
class _Effects:
    """A class's signatures as tables, channels by modes, for one lookup per pump."""

    level: np.ndarray  # relative level change at deg = 1
    swing: np.ndarray  # swing amplitude at deg = 1, rows of the channels that swing
    swung: np.ndarray  # indices of those channels
    cycling: np.ndarray  # per mode
    swings: np.ndarray  # per mode: whether it swings any channel


def _effects(modes: tuple[str, ...]) -> _Effects:
    sigs = [SIGNATURES[m] for m in modes]
    level = np.array([[sig.level.get(c, 0.0) for sig in sigs] for c in CHANNEL_NAMES])
    swing = np.array([[sig.swing.get(c, 0.0) for sig in sigs] for c in CHANNEL_NAMES])
    swung = np.flatnonzero(swing.any(axis=1))
    cycling = np.array([sig.cycling for sig in sigs])
    return _Effects(level, swing[swung], swung, cycling, np.asarray(swing.any(axis=0)))


_EFFECTS = {cls: _effects(p.modes) for cls, p in CLASS_PARAMS.items()}
# Relative sensor noise per channel, in CHANNEL_NAMES order.
_NOISE = np.array([[0.02], [0.02], [0.01], [0.05], [0.02], [0.02]])


def channels(
    rng: np.random.Generator, cls: str, s: np.ndarray, deg: np.ndarray, mode: np.ndarray
) -> dict[str, np.ndarray]:
    """Every channel's values for a pump of class ``cls`` at speed ``s`` (fraction of
    nominal), degradation ``deg`` and failure mode ``mode`` (an index into its class's
    modes). The draws from ``rng`` depend on the number of steps only."""
    eff = _EFFECTS[cls]
    base = np.asarray(CLASS_PARAMS[cls].base, dtype=float)
    base = base * rng.uniform(0.95, 1.05, size=base.shape)  # pump-to-pump spread
    n = len(s)
    # The swing of the erratic modes: a cycle of 4-12 steps with a random phase, and noise.
    period, phase = rng.uniform(4.0, 12.0), rng.uniform(0.0, 2 * np.pi)
    jitter = rng.uniform(-1.0, 1.0, n)
    noise = 1.0 + _NOISE * rng.standard_normal((len(CHANNEL_NAMES), n))
    # The failure mode's factor on each channel (on the rise over ambient for motor_temp).
    f = 1.0 + eff.level.take(mode, axis=1) * deg
    if eff.swings.take(mode).any():  # some step is in a mode that swings
        mix = eff.cycling.take(mode)
        cycle = np.sin(2 * np.pi / period * np.arange(n) + phase)
        swing = deg * (mix * cycle + (1.0 - mix) * jitter)
        f[eff.swung] *= 1.0 + eff.swing.take(mode, axis=1) * swing
    intake, discharge, _, vib, current, flow = f * noise
    s3 = s**3
    worn = 1.0 - 0.05 * deg  # every mode costs a little head and flow
    return {
        "intake_pressure": base[0] * (1.0 + 0.1 * (1.0 - s)) * intake,
        "discharge_pressure": base[1] * s**2 * worn * discharge,
        # Noise on the temperature as a whole, not on its rise alone.
        "motor_temp": (25.0 + (base[2] - 25.0) * s3 * f[2]) * (1.0 + 0.1 * deg) * noise[2],
        "vibration": base[3] * s * (1.0 + 0.6 * deg) * vib,
        "motor_current": base[4] * s3 * current,
        "flow": base[5] * s * worn * flow,
    }


def runs_as_new(
    pump_ids: np.ndarray,
    end_times: np.ndarray,
    failures: dict[str, np.ndarray],
    data_end: np.datetime64,
) -> np.ndarray:
    """Which windows (a pump and the time its window ends) come from a pump still running
    as new: before the longest P-F interval of any class (``pf_days``) ahead of its next
    failure, and that far from the end of the data when no failure follows (one may come
    after it). ``failures``: each pump's failure times, sorted. A health model's flag on
    such a window is a false alarm; closer to a failure the pump may really be wearing,
    though its RUL label is still at the cap."""
    pf = np.timedelta64(int(max(p.pf_days[1] for p in CLASS_PARAMS.values()) * 86400), "s")
    ends = np.asarray(end_times, dtype="datetime64[ms]")
    out = np.zeros(len(ends), dtype=bool)
    for i, (pump, end) in enumerate(zip(pump_ids, ends, strict=True)):
        times = failures.get(str(pump), np.array([], dtype="datetime64[ms]"))
        k = np.searchsorted(times, end, side="left")
        limit = times[k] if k < len(times) else np.asarray(data_end, dtype="datetime64[ms]")
        out[i] = limit - end > pf
    return out
