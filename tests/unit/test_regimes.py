"""Operating regimes (fit at ingest, applied by the one feature code path) and the time
holdout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pumpfleet.adapters.cmapss import import_cmapss
from pumpfleet.errors import InputError
from pumpfleet.feature_specs import class_regime_statistics
from pumpfleet.features import FeatureSpec, Regimes, readings_to_window, window_features
from pumpfleet.ingest_parts import pump_regime_statistics
from pumpfleet.regimes import class_regimes, fit_regimes, merge_statistics, regime_statistics
from pumpfleet.schema import CHANNEL_NAMES, read_fleet_schema
from pumpfleet.windows import WindowConfig, make_windows, time_cutoff
from tests.conftest import SHARED_DATA

SPEEDS = (48.0, 54.0, 60.0)


def _settings(n: int, rng: np.random.Generator, noise: float = 0.05) -> np.ndarray:
    speed = rng.choice(SPEEDS, size=n)
    load = 0.5 + speed / 120.0
    return np.column_stack([speed, load]) + rng.normal(0.0, noise, size=(n, 2)) * [1, 0.01]


def test_three_clear_setpoints_are_three_regimes() -> None:
    fit = fit_regimes(_settings(3000, np.random.default_rng(0)))
    assert fit is not None and fit.silhouette > 0.9
    np.testing.assert_allclose(fit.center[:, 0], SPEEDS, atol=0.05)  # sorted by setting


def test_noise_around_one_point_is_one_regime() -> None:
    # Like C-MAPSS FD001: small independent noise on each setting, one constant.
    rng = np.random.default_rng(1)
    x = np.column_stack([rng.normal(0, 0.002, 5000), rng.normal(0, 3e-4, 5000), np.full(5000, 100)])
    assert fit_regimes(x) is None


def test_constant_or_too_few_settings_are_one_regime() -> None:
    assert fit_regimes(np.full((500, 2), 50.0)) is None
    assert fit_regimes(_settings(10, np.random.default_rng(2))) is None
    # rows with a missing setting are ignored, not an error
    x = _settings(500, np.random.default_rng(3))
    x[::2, 0] = np.nan
    fit = fit_regimes(x)
    assert fit is not None and len(fit.center) == 3


def _regime_spec() -> FeatureSpec:
    return FeatureSpec(
        pump_class="esp",
        channels=["motor_temp"],
        window=2,
        stride=1,
        interval_seconds=3600,
        rul_cap_hours=100,
        horizon_hours=10,
        mean=[70.0],
        std=[20.0],
        regimes=Regimes(
            settings=["speed_setpoint"],
            center=[[50.0], [60.0]],
            scale=[5.0],
            mean=[[60.0], [90.0]],
            std=[[2.0], [4.0]],
            rows=[10, 10],
        ),
        setting_names=["speed_setpoint", "load_setpoint"],
    )


def test_each_reading_is_normalised_with_its_own_regime() -> None:
    spec = _regime_spec()
    assert spec.inputs == ["motor_temp", "speed_setpoint"]
    # step 1 at 50 (regime 0), step 2 at 59 (nearest 60, regime 1)
    x = window_features(np.array([[62.0, 50.0], [98.0, 59.0]]), spec)
    np.testing.assert_allclose(x[:, 0], [(62 - 60) / 2, (98 - 90) / 4])
    # a missing setting: the all-readings statistics
    x = window_features(np.array([[62.0, np.nan], [90.0, 60.0]]), spec)
    np.testing.assert_allclose(x[:, 0], [(62 - 70) / 20, 0.0])
    with pytest.raises(InputError, match=r"2 steps x 1 channels \+ 1 settings, got 2 x 1"):
        window_features(np.zeros((2, 1)), spec)


def test_a_request_must_carry_the_settings_that_pick_the_regime() -> None:
    spec = _regime_spec()
    with pytest.raises(
        InputError, match=r"readings\.speed_setpoint: setting required for class esp"
    ):
        readings_to_window({"motor_temp": [1.0, 2.0]}, spec)
    w = readings_to_window({"motor_temp": [1.0, 2.0], "speed_setpoint": [50.0, None]}, spec)
    assert w.shape == (2, 2) and np.isnan(w[1, 1])
    assert spec.accepted == {"motor_temp", "speed_setpoint", "load_setpoint"}


def test_regime_statistics_merge_exactly_across_parts() -> None:
    rng = np.random.default_rng(4)
    values = rng.normal(10, 3, size=(400, 2))
    values[rng.random((400, 2)) < 0.1] = np.nan
    regime = rng.integers(0, 3, 400)
    whole = merge_statistics([regime_statistics(values, regime, 3)])
    parts = merge_statistics(
        [regime_statistics(values[s], regime[s], 3) for s in (slice(0, 150), slice(150, 400))]
    )
    for a, b in zip(whole, parts, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    for r in range(3):
        v = pd.DataFrame(values[regime == r])
        np.testing.assert_allclose(whole[1][r], v.mean(), rtol=1e-12)
        np.testing.assert_allclose(whole[2][r], v.std(), rtol=1e-12)


def test_a_sparse_regime_falls_back_to_the_class_statistics() -> None:
    fit = fit_regimes(_settings(300, np.random.default_rng(5)))
    assert fit is not None
    n = np.array([[50.0, 1.0], [80.0, 80.0], [60.0, 60.0]])
    mean = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    std = np.array([[0.5, np.nan], [0.0, 1.0], [2.0, 2.0]])
    regimes = class_regimes(
        fit, ["speed_setpoint", "load_setpoint"], (n, mean, std), [9, 9], [7, 7]
    )
    assert regimes is not None
    assert regimes.mean == [[1.0, 9.0], [9.0, 4.0], [5.0, 6.0]]
    assert regimes.std == [[0.5, 7.0], [7.0, 1.0], [2.0, 2.0]]
    assert class_regimes(None, ["s"], None, [1.0], [1.0]) is None


def test_pump_regime_statistics_merge_to_the_training_pumps_only() -> None:
    rng = np.random.default_rng(6)
    frames = []
    for pump in ("esp-1", "esp-2", "esp-3"):
        s = _settings(200, rng)
        frames.append(
            pd.DataFrame(
                {
                    "pump_id": pump,
                    "pump_class": "esp",
                    "speed_setpoint": s[:, 0],
                    "load_setpoint": s[:, 1],
                    "motor_temp": s[:, 0] * 1.5 + rng.normal(0, 1, 200),
                }
            )
        )
    fit = fit_regimes(np.vstack([f[["speed_setpoint", "load_setpoint"]] for f in frames]))
    assert fit is not None
    fits = {"esp": (fit.center, fit.scale)}
    per_pump = pd.concat(
        pump_regime_statistics(f, fits, ["motor_temp"], ["speed_setpoint", "load_setpoint"])
        for f in frames
    )
    splits = {"esp-1": "train", "esp-2": "train", "esp-3": "holdout"}
    n, mean, std = class_regime_statistics(per_pump, splits, ["motor_temp"])["esp"]
    train = pd.concat(frames[:2])
    for r, speed in enumerate(SPEEDS):
        rows = train[np.isclose(train["speed_setpoint"], speed, atol=0.5)]["motor_temp"]
        assert n[r, 0] == len(rows)
        np.testing.assert_allclose([mean[r, 0], std[r, 0]], [rows.mean(), rows.std()], rtol=1e-9)


def _frame(n: int) -> pd.DataFrame:
    df = pd.DataFrame(
        {
            "pump_id": "esp-1",
            "pump_class": "esp",
            "site": "site-00",
            "timestamp": pd.date_range("2026-01-01", periods=n, freq="h", tz="UTC"),
        }
    )
    for i, ch in enumerate(CHANNEL_NAMES):
        df[ch] = np.arange(n, dtype=float) + i
    return df


def test_windows_after_the_cutoff_are_the_time_holdout() -> None:
    cfg = WindowConfig(window=4, stride=1, rul_cap_hours=10, horizon_hours=3)
    df = _frame(40)
    t0 = int(df.timestamp.iloc[0].value // 1_000_000)
    cutoff = time_cutoff(t0, t0 + 39 * 3_600_000, cfg.model_copy(update={"future_fraction": 0.25}))
    assert cutoff == t0 + 29 * 3_600_000 + 900_000  # 39 h span, the last 9.75 h held out
    failure = t0 + 35 * 3_600_000
    for split, expect_future in (("train", True), ("val", True), ("holdout", False)):
        t = make_windows(df, {"esp-1": [failure]}, {"esp-1": split}, cfg, cutoff_ms=cutoff)
        ends = (t.column("end_time").cast("int64").to_numpy() - t0) // 3_600_000
        got = t.column("split").to_pylist()
        want = ["future" if expect_future and e >= 30 else split for e in ends]
        assert got == want
        assert ("future" in got) == expect_future
    assert time_cutoff(t0, t0 + 1000, WindowConfig(future_fraction=0)) is None


@pytest.mark.realdata
@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"public data not found at {SHARED_DATA}")
@pytest.mark.parametrize("subset", ["FD001", "FD003"])
def test_cmapss_single_condition_subsets_have_one_regime(tmp_path: Path, subset: str) -> None:
    """FD001 and FD003 run at one operating condition (their settings are noise around
    it): no regimes, whole-class statistics. The six conditions of FD002 and FD004 are
    the clusters of ``test_three_clear_setpoints_are_three_regimes`` writ large."""
    import_cmapss(subset, SHARED_DATA / "cmapss", str(tmp_path))
    train = pd.read_parquet(tmp_path / "train" / "readings")
    settings = read_fleet_schema(str(tmp_path / "train")).settings
    assert fit_regimes(train[settings].to_numpy(dtype=float)) is None


def test_six_operating_conditions_like_cmapss_fd002() -> None:
    # The six (altitude, Mach, throttle) conditions of FD002/FD004, with their noise.
    conditions = np.array(
        [[0, 0, 100], [10, 0.25, 100], [20, 0.7, 100], [25, 0.62, 60], [35, 0.84, 100],
         [42, 0.84, 100]], dtype=float,
    )  # fmt: skip
    rng = np.random.default_rng(7)
    x = conditions[rng.integers(0, 6, 6000)] + rng.normal(0, [0.003, 3e-4, 0], (6000, 3))
    fit = fit_regimes(x)
    assert fit is not None and len(fit.center) == 6
    np.testing.assert_allclose(fit.center, conditions, atol=0.01)
