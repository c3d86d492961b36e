"""Pump physics for the simulator, coarse but with the right shape: flow follows speed,
head follows speed squared and power (current, heat) speed cubed (the pump affinity
laws); each failure mode leaves its own signature that grows as health declines."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FAILURE_MODES = ("bearing_wear", "seal_leak", "motor_insulation")


@dataclass(frozen=True)
class ClassParams:
    speed: float  # nominal speed setpoint
    regimes: tuple[float, ...]  # operating regimes, as fractions of nominal speed
    # Channel baselines at nominal speed on a healthy pump, in CHANNEL_NAMES order.
    base: tuple[float, float, float, float, float, float]
    life_days: tuple[float, float]  # range of run lives between failures


CLASS_PARAMS: dict[str, ClassParams] = {
    "esp": ClassParams(60.0, (0.8, 0.9, 1.0), (60.0, 180.0, 95.0, 2.0, 45.0, 900.0), (10, 35)),
    "rod": ClassParams(8.0, (0.75, 1.0), (0.0, 40.0, 70.0, 4.0, 30.0, 120.0), (15, 45)),
    "pcp": ClassParams(300.0, (0.7, 0.85, 1.0), (20.0, 90.0, 80.0, 0.0, 60.0, 400.0), (12, 40)),
    "centrifugal": ClassParams(
        3000.0, (0.85, 1.0), (5.0, 25.0, 65.0, 1.5, 120.0, 2500.0), (15, 50)
    ),
}


def health(
    rng: np.random.Generator, n: int, life_steps: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray, list[int], list[int], list[str]]:
    """Degradation in [0, 1] per step, failure mode per step, and the event indices."""
    deg = np.zeros(n)
    mode = np.zeros(n, dtype=np.int64)
    failures: list[int] = []
    maint: list[int] = []
    failure_modes: list[str] = []
    t = 0
    first = True
    while t < n:
        life = rng.uniform(*life_steps)
        m = int(rng.integers(len(FAILURE_MODES)))
        age = rng.uniform(0, 0.8 * life) if first else 0.0
        first = False
        # One cycle may hold a maintenance visit that takes some of the wear back.
        visit = rng.uniform(0.3, 0.7) * life if rng.random() < 0.3 else None
        while t < n:
            stop = visit if visit is not None and age < visit else life
            k = min(n - t, max(1, int(np.ceil(stop - age))))
            ages = age + np.arange(k)
            deg[t : t + k] = np.clip(ages / life, 0.0, 1.0) ** 2
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
                failure_modes.append(FAILURE_MODES[m])
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


def channels(
    rng: np.random.Generator, cls: str, s: np.ndarray, deg: np.ndarray, mode: np.ndarray
) -> dict[str, np.ndarray]:
    base = np.asarray(CLASS_PARAMS[cls].base, dtype=float)
    base = base * rng.uniform(0.95, 1.05, size=base.shape)  # pump-to-pump spread
    bearing = deg * (mode == 0)
    seal = deg * (mode == 1)
    insul = deg * (mode == 2)
    n = len(s)

    def noise(scale: float = 0.02) -> np.ndarray:
        return 1.0 + rng.normal(0.0, scale, n)

    values = {
        "intake_pressure": base[0] * (1.0 + 0.1 * (1.0 - s)) * (1.0 + 0.15 * seal) * noise(),
        "discharge_pressure": base[1] * s**2 * (1.0 - 0.25 * seal - 0.05 * deg) * noise(),
        "motor_temp": (25.0 + (base[2] - 25.0) * s**3 * (1 + 0.5 * insul + 0.3 * bearing))
        * (1.0 + 0.1 * deg)
        * noise(0.01),
        "vibration": base[3] * s * (1.0 + 2.5 * bearing + 0.6 * deg) * noise(0.05),
        "motor_current": base[4] * s**3 * (1.0 + 0.35 * insul + 0.1 * bearing) * noise(),
        "flow": base[5] * s * (1.0 - 0.3 * seal - 0.05 * deg) * noise(),
    }
    return values
