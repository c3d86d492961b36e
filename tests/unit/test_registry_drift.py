"""MLflow (SQLite in a temp folder) and NannyML, for real, with no Ray."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from pumpfleet.errors import RegistryError
from pumpfleet.features import FeatureSpec
from pumpfleet.models import ModelConfig, build_model
from pumpfleet.onnx_io import to_onnx
from pumpfleet.registry import CHALLENGER, CHAMPION, Registry, model_name
from pumpfleet.runtime import run, session

SPEC = FeatureSpec(
    pump_class="rod",
    channels=["motor_temp", "flow"],
    window=6,
    stride=1,
    interval_seconds=3600,
    rul_cap_hours=100,
    horizon_hours=20,
    mean=[70.0, 100.0],
    std=[5.0, 10.0],
)


def register(reg: Registry, seed: int) -> str:
    import torch

    torch.manual_seed(seed)
    model = build_model(2, ModelConfig(hidden=4))
    run_id = reg.start_run("t", f"run-{seed}", params={"seed": seed})
    uri = reg.log_model(run_id, to_onnx(model, 6, 2), SPEC, model.state_dict(), {"hidden": 4})
    reg.end_run(run_id)
    return reg.register(uri, model_name("rod"), tags={"seed": seed})


def test_register_alias_load_and_roll_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    reg = Registry(f"sqlite:///{tmp_path / 'mlflow.db'}", (tmp_path / "art").as_uri())
    name = model_name("rod")
    with pytest.raises(RegistryError, match="no model version pumpfleet-rod@champion"):
        reg.load(name, CHAMPION)
    v1, v2 = register(reg, 1), register(reg, 2)
    assert (v1, v2) == ("1", "2")
    reg.set_alias(name, CHAMPION, v1)
    reg.set_alias(name, CHALLENGER, v2)
    assert reg.aliases(name) == {CHAMPION: "1", CHALLENGER: "2"}
    reg.set_alias(name, CHAMPION, v2)  # promote
    reg.set_alias(name, CHAMPION, v1)  # and roll back
    loaded = reg.load(name, CHAMPION, tmp_path / "dl")
    assert loaded.version == "1" and loaded.spec == SPEC and loaded.tags["seed"] == "1"
    x = np.random.default_rng(0).normal(size=(5, 6, 2)).astype(np.float32)
    import torch

    with torch.no_grad():
        expected = loaded.torch_model()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(run(session(loaded.onnx), x), expected, atol=1e-6)
    assert reg.version_by_alias("pumpfleet-nothing", CHAMPION) is None
    # The registry leaves the process environment as it found it (mlflow's fluent API
    # exports MLFLOW_TRACKING_URI, which later Settings() would read).
    assert "MLFLOW_TRACKING_URI" not in os.environ


def test_a_registry_leaves_the_process_global_state_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two registries on two backends in one process, neither touching os.environ or
    MLflow's process-wide tracking URI: each logs, registers and loads on its own."""
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    elsewhere = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    # what mlflow.set_tracking_uri sets, without its export to the environment
    monkeypatch.setattr("mlflow.tracking._tracking_service.utils._tracking_uri", elsewhere)
    env, uri = dict(os.environ), mlflow.get_tracking_uri()
    a = Registry(f"sqlite:///{tmp_path / 'a.db'}", (tmp_path / "art-a").as_uri())
    b = Registry(f"sqlite:///{tmp_path / 'b.db'}", (tmp_path / "art-b").as_uri())
    assert dict(os.environ) == env and mlflow.get_tracking_uri() == uri
    va, vb = register(a, 1), register(b, 2)
    assert (va, vb) == ("1", "1")
    a.set_alias(model_name("rod"), CHAMPION, va)
    assert a.load(model_name("rod"), CHAMPION, tmp_path / "dl").tags["seed"] == "1"
    assert b.versions(model_name("rod"))["1"]["seed"] == "2"
    assert b.version_by_alias(model_name("rod"), CHAMPION) is None
    assert dict(os.environ) == env and mlflow.get_tracking_uri() == uri == elsewhere
    # and nothing went to the process-wide backend
    assert not (tmp_path / "elsewhere.db").exists()


def test_a_version_whose_alias_cannot_be_set_is_not_left_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.exceptions import MlflowException

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    reg = Registry(f"sqlite:///{tmp_path / 'mlflow.db'}", (tmp_path / "art").as_uri())
    model = build_model(2, ModelConfig(hidden=4))
    run_id = reg.start_run("t", "run")
    uri = reg.log_model(run_id, to_onnx(model, 6, 2), SPEC, model.state_dict(), {"hidden": 4})
    name = model_name("rod")
    assert reg.register_as(uri, name, CHALLENGER) == "1"

    def server_gone(*args: object) -> None:
        raise MlflowException("connection refused")

    monkeypatch.setattr(reg, "set_alias", server_gone)
    with pytest.raises(MlflowException, match="connection refused"):
        reg.register_as(uri, name, CHALLENGER)
    assert list(reg.versions(name)) == ["1"]  # version 2 was removed again
    assert reg.aliases(name) == {CHALLENGER: "1"}
