from __future__ import annotations

import numpy as np
import pytest
import torch

from pumpfleet.errors import ParityError
from pumpfleet.features import FeatureSpec
from pumpfleet.models import ModelConfig, build_model, model_size_bytes
from pumpfleet.onnx_io import check_parity, run, session, to_onnx
from pumpfleet.training import Arrays, TrainConfig, evaluate, fit

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
        on_epoch=lambda e, r, m: losses.append(float(r["train_loss"] or 0)),
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
