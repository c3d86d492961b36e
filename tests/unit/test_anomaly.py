"""Anomaly models and health scores without a cluster: the conv-AE learns, is
deterministic and exports to ONNX with parity; thresholds hit their false-alarm target on
held-out normal windows; a shifted window is flagged; the registration gate."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pumpfleet.anomaly import (
    AnomalyConfig,
    build_autoencoder,
    fit_autoencoder,
    fit_pca,
    model_bytes,
    window_errors,
)
from pumpfleet.errors import DataError
from pumpfleet.health import (
    AnomalyGate,
    HealthSpec,
    calibrate,
    detection_report,
    gate_anomaly,
)
from pumpfleet.onnx_io import to_onnx
from pumpfleet.runtime import run, session

W, C = 16, 4


def normal_windows(n: int, seed: int) -> np.ndarray:
    """Standardised windows of a smooth multichannel signal plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(W)[None, :, None]
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1, 1))
    base = np.sin(0.4 * t + phase) * np.array([1.0, 0.5, -0.8, 0.3])[None, None, :]
    return (base + 0.1 * rng.standard_normal((n, W, C))).astype(np.float32)


@pytest.fixture(scope="module")
def trained() -> tuple[torch.nn.Module, dict[str, float]]:
    torch.set_num_threads(1)
    return fit_autoencoder(normal_windows(256, 0), normal_windows(64, 1), AnomalyConfig(epochs=15))


def test_training_reduces_reconstruction_loss(trained: tuple[torch.nn.Module, dict]) -> None:
    model, report = trained
    val = normal_windows(64, 1)
    untrained = build_autoencoder(C, AnomalyConfig())
    assert window_errors(model, val).mean() < 0.5 * window_errors(untrained, val).mean()
    assert report["val_loss"] == pytest.approx(window_errors(model, val).mean(), rel=1e-5)
    assert model_bytes(model) < 100_000  # well under 1 MB


def test_training_is_deterministic() -> None:
    cfg = AnomalyConfig(epochs=2, seed=7)
    a, ra = fit_autoencoder(normal_windows(64, 0), None, cfg)
    b, rb = fit_autoencoder(normal_windows(64, 0), None, cfg)
    assert ra == rb
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
    c, _ = fit_autoencoder(normal_windows(64, 0), None, cfg.model_copy(update={"seed": 8}))
    assert not torch.equal(
        a.state_dict()["autoencoder.up2.bias"], c.state_dict()["autoencoder.up2.bias"]
    )


@pytest.mark.parametrize("target", [0.05, 0.01])
def test_threshold_meets_target_false_alarms_on_held_out_normal(
    trained: tuple[torch.nn.Module, dict], target: float
) -> None:
    model, _ = trained
    spec = calibrate(window_errors(model, normal_windows(2000, 2)), "conv_ae", target_far=target)
    held_out = spec.flag(window_errors(model, normal_windows(4000, 3))).mean()
    assert abs(held_out - target) <= max(0.5 * target, 0.005)
    assert abs(spec.calibration_far - target) <= 0.2 * target + 1e-3


def test_shifted_window_is_flagged(trained: tuple[torch.nn.Module, dict]) -> None:
    model, _ = trained
    spec = calibrate(window_errors(model, normal_windows(500, 4)), "conv_ae", target_far=0.01)
    normal = normal_windows(1, 5)
    shifted = normal.copy()
    shifted[:, W // 2 :, 0] += 3.0  # a step in one sensor halfway through the window
    score = spec.score(window_errors(model, np.concatenate([normal, shifted])))
    assert score[1] > 1.0 and spec.flag(window_errors(model, shifted))[0]
    assert score[0] < 1.0


def test_onnx_matches_torch(trained: tuple[torch.nn.Module, dict]) -> None:
    model, _ = trained
    x = normal_windows(33, 6)
    got = run(session(to_onnx(model, W, C)), x)
    assert got.shape == (33, 1)
    assert np.max(np.abs(got[:, 0] - window_errors(model, x))) <= 1e-5


def test_pca_baseline_flags_shift_and_not_normal() -> None:
    pca = fit_pca(normal_windows(400, 0))
    spec = calibrate(pca.errors(normal_windows(400, 1)), "pca", target_far=0.01)
    assert spec.flag(pca.errors(normal_windows(2000, 2))).mean() < 0.04
    shifted = normal_windows(20, 3)
    shifted[:, :, 1] += 2.0
    assert spec.flag(pca.errors(shifted)).all()


def test_health_spec_round_trips_and_retunes() -> None:
    errors = np.random.default_rng(0).gamma(2.0, 1.0, size=1000)
    spec = calibrate(errors, "pca", target_far=0.01)
    again = HealthSpec.from_json(spec.to_json())
    assert again == spec
    looser = spec.with_target_far(0.05)
    assert looser.threshold < spec.threshold
    assert spec.with_target_far(0.01, margin=2.0).threshold == pytest.approx(2 * spec.threshold)
    assert spec.score(np.array([spec.error_median, spec.threshold])) == pytest.approx([0.0, 1.0])
    with pytest.raises(ValueError, match="outside the calibrated range"):
        spec.with_target_far(0.0001)
    with pytest.raises(DataError, match="calibration windows"):
        calibrate(errors[:10], "pca")
    with pytest.raises(DataError, match="lowest is"):
        calibrate(errors[:50], "pca", target_far=0.001)


def test_detection_report_and_gate() -> None:
    flags = np.array([1, 1, 0, 0, 1, 0], dtype=bool)
    labels = np.array([1, 0, 0, 1, 1, 0])
    r = detection_report(flags, labels)
    assert r["precision"] == pytest.approx(2 / 3) and r["recall"] == pytest.approx(2 / 3)
    assert r["far"] == pytest.approx(100 / 3) and r["mar"] == pytest.approx(100 / 3)
    gate = AnomalyGate(min_precision=0.6, min_recall=0.7)
    assert gate_anomaly(r, gate) == (False, "recall 0.667 below 0.7")
    assert gate_anomaly(r, AnomalyGate(min_precision=0.6, min_recall=0.6))[0]
    assert gate_anomaly(None, gate) == (True, "no labelled faults to gate on")
    no_faults = detection_report(flags, np.zeros(6))
    assert gate_anomaly(no_faults, AnomalyGate(pass_without_labels=False))[0] is False


def test_centred_channels_ignore_their_level_but_not_their_shape() -> None:
    """A channel read relative to the window's mean: a level far outside training costs
    nothing, a step inside the window is still flagged; the ONNX does the same."""
    torch.set_num_threads(1)
    cfg = AnomalyConfig(epochs=15, centred=[3])
    model, _ = fit_autoencoder(normal_windows(256, 0), None, cfg)
    assert set(model.state_dict()) >= {"centre_mask", "centre_scale"}
    spec = calibrate(window_errors(model, normal_windows(500, 4)), "conv_ae", target_far=0.01)
    normal = normal_windows(1, 5)
    moved, stepped = normal.copy(), normal.copy()
    moved[:, :, 3] += 8.0  # the slow channel somewhere training never saw
    stepped[:, W // 2 :, 3] += 3.0
    errors = window_errors(model, np.concatenate([normal, moved, stepped]))
    assert errors[1] == pytest.approx(errors[0], rel=1e-4)
    assert not spec.flag(errors[:2]).any() and spec.flag(errors[2:])[0]
    x = np.concatenate([normal_windows(20, 6), moved, stepped])
    got = run(session(to_onnx(model, W, C)), x)[:, 0]
    assert np.max(np.abs(got - window_errors(model, x))) <= 1e-5
    # Rebuilt from its config and weights, as the registry and the bundle do.
    again = build_autoencoder(C, cfg)
    again.load_state_dict(model.state_dict())
    np.testing.assert_allclose(window_errors(again, x), window_errors(model, x), rtol=1e-6)


def test_an_autoencoder_without_centred_channels_keeps_its_old_weights() -> None:
    assert "centre_mask" not in build_autoencoder(C, AnomalyConfig()).state_dict()


def test_the_level_term_sees_every_channel_moving_a_little_together() -> None:
    """Wear moves several levels a little at once: within each channel's normal range,
    so the reconstruction error hardly changes, while the recent-level distance does."""
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    level = rng.normal(size=(600, 1, 1)) * np.array([1.0, 1.0, 0.0, 0.0])  # 0 and 1 move together
    x = (normal_windows(600, 0) + level).astype(np.float32)
    plain, _ = fit_autoencoder(x[:400], None, AnomalyConfig(epochs=5))
    withlevel, _ = fit_autoencoder(x[:400], None, AnomalyConfig(epochs=5, level_steps=4))
    assert {"level_mean", "level_whiten"} <= set(withlevel.state_dict())
    worn = normal_windows(50, 9)
    worn[:, :, 0] += 1.5  # channel 0 up, channel 1 not: against their joint normal
    worn[:, :, 1] -= 1.5
    recall = {}
    for name, model in (("plain", plain), ("level", withlevel)):
        spec = calibrate(window_errors(model, x[400:]), "conv_ae", target_far=0.01)
        recall[name] = spec.flag(window_errors(model, worn)).mean()
    assert recall["level"] == 1.0 and recall["plain"] < 0.5
    got = run(session(to_onnx(withlevel, W, C)), worn)[:, 0]
    assert np.max(np.abs(got - window_errors(withlevel, worn))) <= 1e-5
