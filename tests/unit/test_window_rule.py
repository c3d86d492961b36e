"""One window-cutting rule: from the same readings, the device forms exactly the windows
training keeps (pumpfleet.windows.make_windows) and none that it drops, however the
readings arrive in batches and however the pump's record has gaps."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.source import Reading
from edge_agent.windows import roll
from pumpfleet.features import FeatureSpec, max_span_ms
from pumpfleet.windows import WindowConfig, make_windows

HOUR_MS = 3_600_000


def spec(window: int, stride: int) -> FeatureSpec:
    return FeatureSpec(
        pump_class="esp",
        channels=["motor_temp"],
        window=window,
        stride=stride,
        interval_seconds=3600,
        rul_cap_hours=100.0,
        horizon_hours=24.0,
        mean=[0.0],
        std=[1.0],
    )


def training_ends(hours: list[int], window: int, stride: int) -> list[int]:
    df = pd.DataFrame(
        {
            "pump_id": "p1",
            "pump_class": "esp",
            "site": "s",
            "timestamp": pd.to_datetime(np.asarray(hours) * HOUR_MS, unit="ms", utc=True),
            "motor_temp": np.arange(len(hours), dtype=float),
        }
    )
    cfg = WindowConfig(window=window, stride=stride, interval_seconds=3600, rul_cap_hours=100.0,
                       horizon_hours=24.0)  # fmt: skip
    # A failure long after the record: every window's RUL is known, none dropped for it.
    failures = {"p1": [(hours[-1] + 1000) * HOUR_MS]}
    table = make_windows(df, failures, {"p1": "train"}, cfg, channels=["motor_temp"])
    return [int(t.timestamp() * 1000) // HOUR_MS for t in table.column("end_time").to_pylist()]


def device_ends(hours: list[int], window: int, stride: int, cuts: list[int]) -> list[int]:
    s = spec(window, stride)
    states: dict = {}
    ends: list[int] = []
    bounds = [0, *sorted(set(cuts)), len(hours)]
    for a, b in itertools.pairwise(bounds):
        readings = [
            Reading("p1", h * HOUR_MS * 10**6, {"motor_temp": float(i)})
            for i, h in enumerate(hours[a:b], start=a)
        ]
        cut = roll(states, readings, s)
        states = cut.states
        ends += [e // (HOUR_MS * 10**6) for e in cut.ends]
    return ends


@settings(max_examples=150, deadline=None)
@given(
    steps=st.lists(st.sampled_from([1, 1, 1, 1, 2, 3, 5, 30]), min_size=1, max_size=120),
    window=st.integers(2, 12),
    stride=st.integers(1, 5),
    cuts=st.lists(st.integers(0, 120), max_size=6),
)
def test_the_device_forms_exactly_the_windows_training_keeps(
    steps: list[int], window: int, stride: int, cuts: list[int]
) -> None:
    hours = list(np.cumsum(steps).tolist())
    cuts = [c for c in cuts if c <= len(hours)]
    assert device_ends(hours, window, stride, cuts) == training_ends(hours, window, stride)


def test_the_span_rule_is_one_and_a_half_window_lengths() -> None:
    assert max_span_ms(24, 3600) == 23 * 3_600_000 * 1.5
