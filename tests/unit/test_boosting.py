"""The gradient-boosted kind: trained on window statistics, exported with its statistics
inside the ONNX graph, scored through the one scoring path, carried by its state dict."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from pumpfleet.boosting import PARITY_ATOL, BoostedTrees
from pumpfleet.features import FeatureSpec
from pumpfleet.models import ModelConfig, build_model, describe
from pumpfleet.onnx_io import check_parity, parity_atol, to_onnx
from pumpfleet.runtime import onnx_runner
from pumpfleet.scoring import score_rul
from pumpfleet.training import Arrays, TrainConfig, fit
from pumpfleet.window_stats import STATS, WindowStats, feature_names, stat_names

W, C = 20, 3


def spec() -> FeatureSpec:
    return FeatureSpec(
        pump_class="t",
        channels=[f"c{i}" for i in range(C)],
        window=W,
        stride=1,
        interval_seconds=3600,
        rul_cap_hours=100.0,
        horizon_hours=30.0,
        mean=[1.0] * C,
        std=[2.0] * C,
    )


def data(n: int, seed: int) -> Arrays:
    """RUL falls with channel 0's recent level: what the tail statistics see."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, W, C)).astype(np.float32)
    rul = np.clip(50.0 - 40.0 * x[:, -5:, 0].mean(axis=1), 0.0, 100.0).astype(np.float32)
    return Arrays(x, rul, (rul <= 30.0).astype(np.int8))


@pytest.fixture(scope="module")
def trained() -> tuple[torch.nn.Module, dict[str, float | None]]:
    cfg = TrainConfig(
        model=ModelConfig(kind="gbm", members=2, trees=200, leaves=7, min_leaf=10),
        lr=0.1,
        epochs=2,
    )
    return fit(data(1500, 0), data(400, 1), spec(), cfg)


def test_window_stats_are_the_documented_summaries() -> None:
    x = np.zeros((1, 4, 2), dtype=np.float32)
    x[0, :, 0] = [1.0, 2.0, 3.0, 4.0]  # a ramp: slope 1 per step
    f = WindowStats(4)(torch.from_numpy(x)).numpy()[0]
    named = dict(zip(feature_names(["a", "b"]), f, strict=True))
    assert len(f) == len(STATS) * 2
    assert named["mean:a"] == pytest.approx(2.5)
    assert named["std:a"] == pytest.approx(np.std([1, 2, 3, 4]))
    assert named["slope:a"] == pytest.approx(1.0)
    assert (named["min:a"], named["max:a"]) == (1.0, 4.0)
    assert named["tail_mean:a"] == pytest.approx(2.5)  # the last 5 steps: all 4
    assert named["recent_slope:a"] == pytest.approx(1.0)
    assert named["std:b"] == 0.0 and named["slope:b"] == 0.0


def test_boosters_learn_the_rul_and_report_like_an_epoch(trained) -> None:  # type: ignore[no-untyped-def]
    model, report = trained
    assert isinstance(model, BoostedTrees)
    assert len(model.rul_models) == len(model.failure_models) == 2
    # The training-mean baseline is about 27 h here; the trees read the tail mean.
    assert report["rmse"] is not None and report["rmse"] < 8.0
    assert report["auc"] is not None and report["auc"] > 0.95
    assert report["best_epoch"] == 2.0


def test_onnx_holds_the_statistics_and_trees_within_the_float32_tolerance(trained) -> None:  # type: ignore[no-untyped-def]
    model, _ = trained
    onnx_bytes = to_onnx(model, W, C)
    x = data(500, 2).x
    err = check_parity(model, onnx_bytes, x)
    assert parity_atol(model) == PARITY_ATOL == 1e-4
    assert err <= PARITY_ATOL
    # Raw windows score through the one scoring path exactly as for the networks.
    raw = x.astype(np.float64) * 2.0 + 1.0
    scored = score_rul(raw, spec(), onnx_runner(onnx_bytes))
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy().astype(np.float64)
    np.testing.assert_allclose(scored.rul_hours, np.clip(want[:, 0], 0, 1) * 100.0, atol=1e-2)
    np.testing.assert_allclose(scored.failure_probability, want[:, 1], atol=PARITY_ATOL)


def test_its_state_dict_carries_the_trees(trained) -> None:  # type: ignore[no-untyped-def]
    model, _ = trained
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    again = build_model(C, ModelConfig(kind="gbm", members=2))
    again.load_state_dict(torch.load(buf, weights_only=True))
    x = torch.from_numpy(data(50, 3).x)
    torch.testing.assert_close(again(x), model(x))
    info = describe(again)
    assert info["class"] == "BoostedTrees" and info["parameters"] > 0 and info["bytes"] > 0


def test_an_untrained_booster_says_so() -> None:
    with pytest.raises(ValueError, match="no trees"):
        build_model(C, ModelConfig(kind="gbm"))(torch.zeros(1, W, C))


def test_thresholds_become_float32_without_changing_a_float32_decision() -> None:
    import lightgbm as lgb

    from pumpfleet.boosting import float32_thresholds

    rng = np.random.default_rng(4)
    x = rng.normal(size=(400, 2)).astype(np.float32).astype(np.float64)
    booster = lgb.train(
        {"objective": "regression", "verbose": -1, "num_leaves": 8}, lgb.Dataset(x, x[:, 0]), 5
    )
    text = float32_thresholds(booster.model_to_string())
    moved = lgb.Booster(model_str=text)
    thresholds = [
        float(v)
        for line in text.splitlines()
        if line.startswith("threshold=")
        for v in line.removeprefix("threshold=").split()
    ]
    assert thresholds and all(float(np.float32(t)) == t for t in thresholds)
    # Every float32 input, the training values (which sit next to thresholds) included.
    probe = np.vstack([x, rng.normal(size=(2000, 2)).astype(np.float32)])
    np.testing.assert_array_equal(moved.predict(probe), booster.predict(probe))


def test_a_network_blended_with_trees_trains_exports_and_reloads() -> None:
    from pumpfleet.boosting import Blended

    torch.set_num_threads(1)
    cfg = TrainConfig(
        model=ModelConfig(kind="cnn", hidden=8, blend_gbm=True, trees=80, min_leaf=10),
        epochs=2,
    )
    train, val = data(600, 0), data(200, 1)
    model, report = fit(train, val, spec(), cfg)
    assert isinstance(model, Blended) and model.trees.rul_models
    onnx_bytes = to_onnx(model, W, C)
    assert check_parity(model, onnx_bytes, val.x) <= PARITY_ATOL
    with torch.no_grad():
        x = torch.from_numpy(val.x[:20])
        torch.testing.assert_close(model(x), (model.net(x) + model.trees(x)) / 2)
    again = build_model(C, cfg.model)
    again.load_state_dict(model.state_dict())
    torch.testing.assert_close(again.eval()(x), model(x))
    assert report["rmse"] is not None and report["rmse"] < 20.0
    with pytest.raises(ValueError, match="kind is gbm already"):
        ModelConfig(kind="gbm", blend_gbm=True)


def test_multiscale_stats_add_recent_means_slopes_and_weighted_means() -> None:
    x = np.zeros((1, 40, 1), dtype=np.float32)
    x[0, :, 0] = np.arange(40.0)  # a ramp: slope 1 per step, last value 39
    names = stat_names(40, multiscale=True)
    f = WindowStats(40, multiscale=True)(torch.from_numpy(x)).numpy()[0]
    named = dict(zip(feature_names(["a"], 40, multiscale=True), f, strict=True))
    assert len(f) == len(names) == len(STATS) + 2 * 3 + 2
    assert named["mean10:a"] == pytest.approx(34.5) and named["slope10:a"] == pytest.approx(1.0)
    assert named["mean30:a"] == pytest.approx(24.5) and named["slope30:a"] == pytest.approx(1.0)
    # Weights falling by 0.7 a step back: the mean leans to the last values (39, 38, ...).
    w = 0.7 ** np.arange(39, -1, -1.0)
    assert named["ewm0.7:a"] == pytest.approx(float((w * np.arange(40.0)).sum() / w.sum()))
    assert 30.0 < named["ewm0.9:a"] < named["ewm0.7:a"] < 39.0
    # Scales as long as the window are left out; the plain statistics stay first.
    assert stat_names(20, multiscale=True)[: len(STATS)] == list(STATS)
    assert "mean20" not in stat_names(20, multiscale=True)


def test_a_multiscale_booster_exports_with_its_statistics_and_reloads() -> None:
    cfg = TrainConfig(
        model=ModelConfig(kind="gbm", stats="multiscale", trees=80, leaves=7, min_leaf=10),
        epochs=1,
    )
    model, report = fit(data(800, 0), data(200, 1), spec(), cfg)
    assert report["rmse"] is not None and report["rmse"] < 10.0
    x = data(300, 2).x
    onnx_bytes = to_onnx(model, W, C)
    assert check_parity(model, onnx_bytes, x) <= PARITY_ATOL
    again = build_model(C, cfg.model)
    again.load_state_dict(model.state_dict())
    torch.testing.assert_close(again(torch.from_numpy(x)), model(torch.from_numpy(x)))


def test_a_lookback_adds_boosters_on_the_last_steps_averaged_in_one_onnx() -> None:
    cfg = TrainConfig(
        model=ModelConfig(
            kind="gbm", stats="multiscale", lookback=8, trees=80, leaves=7, min_leaf=10
        ),
        epochs=1,
    )
    model, report = fit(data(800, 0), data(200, 1), spec(), cfg)
    assert isinstance(model, BoostedTrees)
    assert model.lookbacks == [None, 8] and len(model.rul_models) == 2
    assert report["rmse"] is not None and report["rmse"] < 10.0
    x = data(300, 2).x
    # The second group reads the statistics of the last 8 steps: earlier steps change
    # the first group's features only.
    f = model.features(torch.from_numpy(x))
    width = len(stat_names(W, multiscale=True)) * C
    assert f.shape[1] == width + len(stat_names(8, multiscale=True)) * C
    y = x.copy()
    y[:, :-8, :] += 5.0
    g = model.features(torch.from_numpy(y))
    assert not np.allclose(f[:, :width], g[:, :width])
    np.testing.assert_array_equal(f[:, width:], g[:, width:])
    # The mean of the two groups, each clipped, in torch and in one ONNX graph.
    out = model(torch.from_numpy(x)).numpy()
    rul_b, _ = model.boosters()
    f64 = f.astype(np.float64)
    parts = [
        np.clip(b.predict(cols), 0, 1)
        for b, cols in zip(rul_b, (f64[:, :width], f64[:, width:]), strict=True)
    ]
    np.testing.assert_allclose(out[:, 0], np.mean(parts, axis=0), atol=1e-6)
    onnx_bytes = to_onnx(model, W, C)
    assert check_parity(model, onnx_bytes, x) <= PARITY_ATOL
    again = build_model(C, cfg.model)
    again.load_state_dict(model.state_dict())
    torch.testing.assert_close(again(torch.from_numpy(x)), model(torch.from_numpy(x)))
