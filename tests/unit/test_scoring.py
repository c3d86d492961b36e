"""The one scoring path (pumpfleet.scoring) with fake models: what every side gets."""

from __future__ import annotations

import numpy as np
import pytest

from pumpfleet.errors import InputError
from pumpfleet.health import calibrate
from pumpfleet.runtime import Runner
from pumpfleet.scoring import HealthModel, score_features, score_rul, score_windows
from tests.unit.test_features import spec


def rul_model(outputs: list[list[float]]) -> tuple[list[np.ndarray], Runner]:
    """A fake RUL model giving ``outputs``; it records the features it was called with."""
    seen: list[np.ndarray] = []

    def run(x: np.ndarray) -> np.ndarray:
        seen.append(x)
        return np.asarray(outputs, dtype=np.float32)

    return seen, run


def test_outputs_are_decoded_and_alerts_raised_at_the_threshold() -> None:
    s = spec(alert_threshold=0.5)
    _, run = rul_model([[0.5, 0.5], [1.2, 0.49], [0.25, 0.9]])
    out = score_rul(np.full((3, 3, 2), 80.0), s, run)
    np.testing.assert_allclose(out.rul_hours, [50.0, 100.0, 25.0])  # cap 100 h, clipped
    np.testing.assert_allclose(out.failure_probability, [0.5, 0.49, 0.9], rtol=1e-6)
    assert out.alert.tolist() == [True, False, True]
    assert out.ok.all() and out.outputs.shape == (3, 2)
    # A device's own threshold replaces the spec's.
    assert score_rul(np.full((3, 3, 2), 80.0), s, run, 0.95).alert.tolist() == [False] * 3


def test_non_finite_outputs_are_not_ok_and_never_alert() -> None:
    _, run = rul_model([[np.nan, 0.9], [0.5, np.inf], [0.5, 0.9]])
    out = score_rul(np.full((3, 3, 2), 80.0), spec(), run)
    assert out.ok.tolist() == [False, False, True]
    assert out.alert.tolist() == [False, False, True]
    assert out.rul_hours[:2].tolist() == [0.0, 0.0]


def test_a_model_with_the_wrong_output_shape_is_refused() -> None:
    _, run = rul_model([[0.5, 0.5, 0.5]])
    with pytest.raises(InputError, match=r"outputs \(1, 3\), not \(1, 2\)"):
        score_rul(np.full((1, 3, 2), 80.0), spec(), run)


def test_features_are_made_once_and_reused_by_a_health_model_of_the_same_spec() -> None:
    s = spec()
    seen, run = rul_model([[0.5, 0.1]] * 4)
    health_calls: list[np.ndarray] = []

    def errors(x: np.ndarray) -> np.ndarray:
        health_calls.append(x)
        return np.array([[0.0], [1.0], [100.0], [np.nan]])

    health = calibrate(np.linspace(0, 2, 200), "pca", target_far=0.01)
    model = HealthModel("7", s, health, errors)
    raw = np.full((4, 3, 2), 80.0)
    got = score_windows(raw, s, run, model)
    assert health_calls[0] is seen[0]  # the same feature array, not made twice
    assert got.health is not None
    assert got.health.ok.tolist() == [True, True, True, False]
    assert got.health.flags.tolist() == [False, False, True, False]
    np.testing.assert_allclose(got.health.scores[:3], health.score(np.array([0.0, 1.0, 100.0])))
    assert np.isnan(got.health.scores[3])


def test_a_health_model_reading_other_inputs_scores_nothing() -> None:
    s = spec()
    other = spec(channels=["motor_temp", "vibration"])
    _, run = rul_model([[0.5, 0.1]])
    model = HealthModel("1", other, calibrate(np.linspace(0, 1, 50), "pca", 0.05), run)
    assert score_windows(np.full((1, 3, 2), 80.0), s, run, model).health is None
    assert score_windows(np.full((1, 3, 2), 80.0), s, run).health is None


def test_scoring_features_equals_scoring_the_raw_windows() -> None:
    s = spec()
    _, run = rul_model([[0.3, 0.7], [0.6, 0.2]])
    raw = np.random.default_rng(1).normal(80, 10, size=(2, 3, 2))
    a = score_rul(raw, s, run)
    b = score_features(a.features, s, run)
    np.testing.assert_array_equal(a.rul_hours, b.rul_hours)
    np.testing.assert_array_equal(a.alert, b.alert)
