from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from pumpfleet.errors import ParityError
from pumpfleet.features import FeatureSpec
from pumpfleet.models import NEURAL_KINDS, ModelConfig, build_model, model_size_bytes
from pumpfleet.onnx_io import check_parity, to_onnx
from pumpfleet.runtime import run, session
from pumpfleet.training import Arrays, TrainConfig, TrainingDiverged, evaluate, fit

W, C = 12, 3


def tiny_task(n: int, seed: int) -> Arrays:
    """RUL is readable from the window: the last value of channel 0 falls with wear."""
    rng = np.random.default_rng(seed)
    rul = rng.uniform(0, 100, n).astype(np.float32)
    x = rng.normal(0, 0.3, size=(n, W, C)).astype(np.float32)
    x[:, :, 0] += (1 - rul[:, None] / 100) * 3
    return Arrays(x=x, rul=rul, failure=(rul <= 20).astype(np.int8))


SPEC = FeatureSpec(
    pump_class="esp",
    channels=["motor_temp", "flow", "vibration"],
    window=W,
    stride=1,
    interval_seconds=3600,
    rul_cap_hours=100,
    horizon_hours=20,
    mean=[0.0] * C,
    std=[1.0] * C,
)


def test_training_learns_and_beats_the_mean() -> None:
    torch.set_num_threads(1)
    train, val = tiny_task(800, 0), tiny_task(200, 1)
    losses: list[float] = []
    model, report = fit(
        train,
        val,
        SPEC,
        TrainConfig(epochs=6, seed=0),
        on_epoch=lambda e, r, m, s: losses.append(float(r["train_loss"] or 0)),
    )
    assert losses[-1] < losses[0]
    baseline = float(np.sqrt(np.mean((val.rul - train.rul.mean()) ** 2)))
    assert report["rmse"] is not None and report["rmse"] < 0.6 * baseline
    assert report["auc"] is not None and report["auc"] > 0.9
    assert model_size_bytes(model) < 1_000_000


def test_training_is_deterministic_under_a_seed() -> None:
    torch.set_num_threads(1)
    train, val = tiny_task(200, 0), tiny_task(50, 1)
    cfg = TrainConfig(epochs=2, seed=7)
    a, ra = fit(train, val, SPEC, cfg)
    b, rb = fit(train, val, SPEC, cfg)
    assert ra == rb
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert evaluate(a, val, SPEC) == evaluate(b, val, SPEC)


def test_onnx_scores_like_torch_at_any_batch_size() -> None:
    model = build_model(C, ModelConfig(hidden=8))
    onnx_bytes = to_onnx(model, W, C)
    x = tiny_task(300, 2).x
    assert check_parity(model, onnx_bytes, x) <= 1e-5
    sess = session(onnx_bytes)
    assert run(sess, x[:1]).shape == (1, 2)
    assert run(sess, x).shape == (300, 2)


def test_parity_failure_is_reported() -> None:
    a = build_model(C, ModelConfig(hidden=8))
    torch.manual_seed(99)
    b = build_model(C, ModelConfig(hidden=8))
    with pytest.raises(ParityError, match="ONNX differs from torch"):
        check_parity(a, to_onnx(b, W, C), tiny_task(50, 3).x)


@pytest.mark.parametrize(
    "model",
    [
        *(ModelConfig(kind=k, hidden=8, heads=2) for k in NEURAL_KINDS),
        ModelConfig(kind="gru", hidden=8, members=2),
    ],
    ids=[*NEURAL_KINDS, "gru-ensemble"],
)
def test_every_kind_trains_deterministically_and_exports(model: ModelConfig) -> None:
    torch.set_num_threads(1)
    train, val = tiny_task(300, 0), tiny_task(60, 1)
    cfg = TrainConfig(model=model, epochs=3, seed=3)
    losses: list[float] = []
    a, ra = fit(
        train,
        val,
        SPEC,
        cfg,
        on_epoch=lambda e, r, m, s: losses.append(float(r["train_loss"] or 0)),
    )
    b, rb = fit(train, val, SPEC, cfg)
    assert losses[-1] < losses[0]
    assert ra == rb
    for (na, pa), (nb, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert na == nb and torch.equal(pa, pb), na
    assert check_parity(a, to_onnx(a, W, C), val.x) <= 1e-5


def test_boosted_trees_train_deterministically_and_export() -> None:
    """Same data, config and seed: the same trees (byte for byte), and their ONNX within
    the float32 trees' tolerance of LightGBM's own prediction."""
    torch.set_num_threads(1)
    train, val = tiny_task(300, 0), tiny_task(60, 1)
    cfg = TrainConfig(model=ModelConfig(kind="gbm", trees=60, min_leaf=5), lr=0.1, epochs=3)
    epochs: list[int] = []
    a, ra = fit(train, val, SPEC, cfg, on_epoch=lambda e, r, m, s: epochs.append(e))
    b, rb = fit(train, val, SPEC, cfg)
    assert epochs == [3] and ra == rb
    assert a.get_extra_state() == b.get_extra_state()  # type: ignore[operator]
    assert ra["rmse"] is not None and ra["rmse"] < 15.0  # the mean predicts ~29
    assert check_parity(a, to_onnx(a, W, C), val.x) <= 1e-4


def test_a_different_seed_gives_different_weights() -> None:
    torch.set_num_threads(1)
    train, val = tiny_task(200, 0), tiny_task(50, 1)
    a, _ = fit(train, val, SPEC, TrainConfig(epochs=1, seed=1))
    b, _ = fit(train, val, SPEC, TrainConfig(epochs=1, seed=2))
    assert not all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))


def test_training_leaves_the_callers_random_state_alone() -> None:
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    fit(tiny_task(100, 0), tiny_task(20, 1), SPEC, TrainConfig(epochs=1))
    torch.testing.assert_close(torch.rand(3), expected)


@pytest.mark.parametrize("ema", [None, 0.9])
def test_a_resumed_run_ends_where_an_uninterrupted_one_does(ema: float | None) -> None:
    torch.set_num_threads(1)
    train, val = tiny_task(300, 0), tiny_task(60, 1)
    model = ModelConfig(kind="tcn", hidden=8, dropout=0.2)
    cfg = TrainConfig(model=model, epochs=4, seed=4, ema_decay=ema)
    states: dict[int, dict[str, Any]] = {}
    whole, report = fit(train, val, SPEC, cfg, on_epoch=lambda e, r, m, s: states.update({e: s}))
    epochs: list[int] = []
    resumed, again = fit(
        train, val, SPEC, cfg, on_epoch=lambda e, r, m, s: epochs.append(e), resume=states[2]
    )
    assert epochs == [3, 4]
    assert again == report
    for x, y in zip(whole.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(x, y)


@pytest.mark.parametrize("where", ["inputs", "labels"])
def test_a_non_finite_loss_fails_the_run_naming_the_epoch(where: str) -> None:
    train, val = tiny_task(100, 0), tiny_task(20, 1)
    if where == "inputs":
        train.x[7, 3, 1] = np.nan
    else:
        train.rul[11] = np.inf
    cfg = TrainConfig(epochs=3)
    with pytest.raises(TrainingDiverged) as exc:
        fit(train, val, SPEC, cfg)
    became = {"inputs": "nan", "labels": "inf"}[where]
    assert str(exc.value) == (
        f"training diverged in epoch 1: the loss became {became} "
        f"(learning rate {cfg.lr:g}; try a lower one)"
    )


def test_best_epoch_is_tracked_restored_and_stops_early() -> None:
    torch.set_num_threads(1)
    train, val = tiny_task(300, 0), tiny_task(60, 1)
    reports: list[dict[str, float | None]] = []
    cfg = TrainConfig(epochs=12, lr=0.3, schedule="constant", restore_best=True, patience=2, seed=1)
    model, report = fit(train, val, SPEC, cfg, on_epoch=lambda e, r, m, s: reports.append(r))
    rmses = [float(r["rmse"] or 0) for r in reports]
    best = int(np.argmin(rmses)) + 1
    assert report["best_epoch"] == best and report["rmse"] == min(rmses)
    assert evaluate(model, val, SPEC)["rmse"] == pytest.approx(min(rmses))
    assert len(reports) == 12 or len(reports) == best + 2


def test_the_moving_average_is_what_is_scored_and_returned() -> None:
    torch.set_num_threads(1)
    train, val = tiny_task(300, 0), tiny_task(60, 1)
    seen: list[nn.Module] = []
    plain, _ = fit(train, val, SPEC, TrainConfig(epochs=2, seed=5))
    averaged, report = fit(
        train,
        val,
        SPEC,
        TrainConfig(epochs=2, seed=5, ema_decay=0.95),
        on_epoch=lambda e, r, m, s: seen.append(m),
    )
    assert seen[-1] is averaged
    assert report["rmse"] == evaluate(averaged, val, SPEC)["rmse"]
    assert not torch.equal(next(plain.parameters()), next(averaged.parameters()))
