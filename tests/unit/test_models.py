from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from pumpfleet.models import (
    MAX_BYTES,
    NEURAL_KINDS,
    TCN,
    Ensemble,
    ModelConfig,
    build_model,
    model_size_bytes,
)
from pumpfleet.onnx_io import check_parity, to_onnx
from pumpfleet.runtime import run, session

W, C = 30, 14


def windows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, W, C)).astype(np.float32)


@pytest.mark.parametrize("kind", NEURAL_KINDS)
def test_every_kind_maps_windows_to_rul_fraction_and_probability(kind: str) -> None:
    model = build_model(C, ModelConfig(kind=kind, hidden=16)).eval()
    x = torch.from_numpy(windows(5))
    with torch.no_grad():
        out, raw = model(x), model.raw(x)
    assert out.shape == (5, 2)
    assert torch.all((out > 0) & (out < 1))
    torch.testing.assert_close(out, torch.sigmoid(raw))


@pytest.mark.parametrize(
    "cfg",
    [
        ModelConfig(kind="cnn", hidden=16),
        ModelConfig(kind="tcn", hidden=16, layers=3, kernel=3),
        ModelConfig(kind="gru", hidden=16),
        ModelConfig(kind="gru", hidden=16, layers=2, dropout=0.2),
        ModelConfig(kind="tcn", hidden=8, members=3),
        ModelConfig(kind="transformer", hidden=16, heads=2),
        ModelConfig(kind="transformer", hidden=8, heads=4, layers=1, members=2),
    ],
    ids=["cnn", "tcn", "gru", "gru-2-layers", "tcn-ensemble", "transformer", "transformer-x2"],
)
def test_every_kind_exports_to_onnx_with_a_dynamic_batch(cfg: ModelConfig) -> None:
    torch.manual_seed(0)
    model = build_model(C, cfg)
    onnx_bytes = to_onnx(model, W, C)
    x = windows(257, seed=1)
    assert check_parity(model, onnx_bytes, x) <= 1e-5
    sess = session(onnx_bytes)
    for n in (1, 3, 257):
        assert run(sess, x[:n]).shape == (n, 2)


@pytest.mark.parametrize(
    "cfg",
    [
        ModelConfig(kind="cnn", hidden=64),
        ModelConfig(kind="tcn", hidden=64, layers=3, kernel=5),
        ModelConfig(kind="tcn", hidden=96, layers=2, kernel=3),
        ModelConfig(kind="gru", hidden=128, layers=2),
        ModelConfig(kind="tcn", hidden=32, members=5),
        ModelConfig(kind="transformer", hidden=64, heads=4, layers=2),
    ],
    ids=str,
)
def test_edge_sized_configs_stay_well_under_a_megabyte(cfg: ModelConfig) -> None:
    assert model_size_bytes(build_model(24, cfg)) < MAX_BYTES


def test_the_tcn_covers_a_30_step_window_by_default() -> None:
    assert TCN.receptive_field(ModelConfig(kind="tcn")) >= 30


def test_the_tcn_is_causal() -> None:
    """Each step's features depend only on the past: changing the last reading changes
    nothing before it."""
    model = build_model(C, ModelConfig(kind="tcn", hidden=8)).eval()
    assert isinstance(model, TCN)
    x = torch.from_numpy(windows(2))
    y = x.clone()
    y[:, -1] += 5.0
    with torch.no_grad():
        a, b = model.blocks(x.transpose(1, 2)), model.blocks(y.transpose(1, 2))
    torch.testing.assert_close(a[:, :, :-1], b[:, :, :-1])
    assert not torch.allclose(a[:, :, -1], b[:, :, -1])


def test_registered_cnn_weights_still_load() -> None:
    """Versions registered before ``kind`` had other values carry this config and these
    weight names."""
    old_config = {"kind": "cnn", "hidden": 32, "kernel": 5, "dropout": 0.1}
    model = build_model(C, ModelConfig(**old_config))
    assert set(model.state_dict()) == {
        "body.0.weight",
        "body.0.bias",
        "body.2.weight",
        "body.2.bias",
        "head.weight",
        "head.bias",
    }
    model.load_state_dict(build_model(C, ModelConfig(**old_config)).state_dict())


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValidationError, match="kind"):
        ModelConfig(kind="lstm")


def test_an_ensemble_averages_its_members() -> None:
    torch.manual_seed(0)
    model = build_model(C, ModelConfig(kind="gru", hidden=8, members=3)).eval()
    assert isinstance(model, Ensemble) and len(model.members) == 3
    x = torch.from_numpy(windows(4))
    with torch.no_grad():
        each = torch.stack([m(x) for m in model.members])
        torch.testing.assert_close(model(x), each.mean(dim=0))
        torch.testing.assert_close(torch.sigmoid(model.raw(x)), model(x))
        assert model.member_raw(x).shape == (3, 4, 2)
    assert not torch.equal(each[0], each[1])  # initialised independently


def test_transformer_heads_must_divide_its_width() -> None:
    with pytest.raises(ValidationError, match="multiple of heads"):
        ModelConfig(kind="transformer", hidden=30, heads=4)


def test_the_transformer_reads_positions_back_from_the_last_step() -> None:
    """The same last readings in a shorter window meet the same position embeddings."""
    model = build_model(C, ModelConfig(kind="transformer", hidden=8, heads=2)).eval()
    assert model.position.shape[1] >= 300  # type: ignore[union-attr]
    with torch.no_grad():
        assert model(torch.from_numpy(windows(2))[:, -7:]).shape == (2, 2)
