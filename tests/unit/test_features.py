from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from pumpfleet.errors import InputError
from pumpfleet.features import (
    CLIP,
    FeatureSpec,
    decode_outputs,
    readings_to_window,
    select_channels,
    window_features,
    window_summary,
)
from pumpfleet.schema import CHANNEL_NAMES


def spec(**kw: object) -> FeatureSpec:
    base = dict(
        pump_class="esp",
        channels=["motor_temp", "flow"],
        window=3,
        stride=1,
        interval_seconds=3600,
        rul_cap_hours=100.0,
        horizon_hours=24.0,
        mean=[80.0, 1000.0],
        std=[10.0, 100.0],
    )
    base.update(kw)
    return FeatureSpec(**base)  # type: ignore[arg-type]


def test_standardises_and_fills_missing_with_the_mean() -> None:
    raw = np.array([[90.0, 900.0], [np.nan, 1000.0], [80.0, 1e9]])
    x = window_features(raw, spec())
    assert x.dtype == np.float32
    np.testing.assert_allclose(x[:, 0], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(x[:, 1], [-1.0, 0.0, CLIP])


def test_batches_and_single_windows_agree() -> None:
    rng = np.random.default_rng(0)
    raw = rng.normal(80, 10, size=(5, 3, 2))
    batch = window_features(raw, spec())
    for i in range(5):
        np.testing.assert_array_equal(batch[i], window_features(raw[i], spec()))


def test_wrong_window_shape_is_an_input_error() -> None:
    with pytest.raises(InputError, match="window must be 3 steps x 2 channels, got 4 x 2"):
        window_features(np.zeros((4, 2)), spec())


def test_readings_to_window_names_the_bad_field() -> None:
    s = spec()
    good = {"motor_temp": [1.0, None, 3.0], "flow": [4.0, 5.0, 6.0], "vibration": [0.0] * 3}
    w = readings_to_window(good, s)
    assert w.shape == (3, 2) and np.isnan(w[1, 0]) and w[2, 1] == 6.0
    with pytest.raises(InputError, match=r"readings\.flow: channel required"):
        readings_to_window({"motor_temp": [1.0] * 3}, s)
    with pytest.raises(InputError, match=r"readings\.motor_temp: expected 3 values, got 2"):
        readings_to_window({"motor_temp": [1.0, 2.0], "flow": [1.0] * 3}, s)


def test_decode_outputs_scales_and_clips() -> None:
    rul, prob = decode_outputs(np.array([[0.5, 0.2], [1.5, -0.1]]), spec())
    np.testing.assert_allclose(rul, [50.0, 100.0])
    np.testing.assert_allclose(prob, [0.2, 0.0])


def test_select_channels_and_summary() -> None:
    raw_all = np.arange(3 * len(CHANNEL_NAMES), dtype=float).reshape(3, len(CHANNEL_NAMES))
    sel = select_channels(raw_all, spec())
    np.testing.assert_array_equal(sel[:, 0], raw_all[:, CHANNEL_NAMES.index("motor_temp")])
    summary = window_summary(sel[None], spec())
    with pytest.raises(InputError, match="the windows hold no channel 'flow'"):
        select_channels(raw_all[:, :2], spec(), ["intake_pressure", "motor_temp"])
    assert summary["flow"][0] == pytest.approx(raw_all[:, CHANNEL_NAMES.index("flow")].mean())


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"channels": ["flow", "flow"]}, "channels and settings must be unique"),
        ({"channels": [], "mean": [], "std": []}, "at least 1 item"),
        ({"std": [0.0, 1.0]}, "std must be positive"),
        ({"mean": [0.0]}, "same length"),
        ({"window": 1}, "greater than or equal to 2"),
    ],
)
def test_spec_validation(bad: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        spec(**bad)


def test_spec_json_round_trip() -> None:
    s = spec()
    assert FeatureSpec.from_json(s.to_json()) == s
