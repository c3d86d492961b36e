"""The anomaly kind on the shared local Ray: a conv-AE tuned for one class of a small
simulated fleet, tracked in MLflow, calibrated and registered as
``pumpfleet-<class>-anomaly@challenger`` without appearing as a pump class, and promoted
(the class's first)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from pumpfleet import lifecycle
from pumpfleet.health import AnomalyGate, HealthSpec
from pumpfleet.registry import CHALLENGER, CHAMPION, Registry, anomaly_model_name
from pumpfleet.runtime import run, session
from pumpfleet.settings import Settings
from pumpfleet.simulator import SimulationConfig, simulate
from pumpfleet.windows import WindowConfig

pytestmark = [pytest.mark.ray]


def test_anomaly_model_trained_and_registered(
    tmp_path_factory: pytest.TempPathFactory, ray_session: Any
) -> None:
    from pumpfleet.search_space import AnomalySearchSpace
    from ray_jobs.ingest import run_ingest
    from ray_jobs.train_anomaly import run_train_anomaly

    settings = Settings(home=tmp_path_factory.mktemp("anomaly"))
    simulate(SimulationConfig(pumps=16, days=30, seed=3), str(settings.data_dir))
    run_ingest(str(settings.data_dir), str(settings.features_dir), WindowConfig(stride=8))
    # Stride 8 leaves few validation windows: a 5% rate is what they can calibrate.
    gate = AnomalyGate(min_precision=0.0, min_recall=0.0)
    space = AnomalySearchSpace(epochs=2, target_far=0.05, gate=gate)
    out = run_train_anomaly(settings, "latest", space, classes=["esp"], promote=True)
    assert out["trials"] == 2
    result = out["classes"]["esp"]
    assert result["registered"] and result["onnx_parity"] <= 1e-5
    reg = Registry(settings.tracking_uri, settings.artifact_root)
    name = anomaly_model_name("esp")
    assert reg.version_by_alias(name, CHALLENGER) == result["version"]
    # The first model of the class that passed its gate is promoted, and it is recorded.
    assert result["promoted"] and reg.version_by_alias(name, CHAMPION) == result["version"]
    (record,) = lifecycle.history(reg, "esp", "anomaly")
    assert (record.action, record.version, record.source) == ("promote", result["version"], "train")
    assert reg.anomaly_classes() == ["esp"] and reg.classes() == []
    loaded = reg.load(name, CHALLENGER)
    health = HealthSpec.model_validate(loaded.model_config["health"])
    assert loaded.model_config["kind"] == "anomaly" and health.target_far == 0.05
    assert health.threshold == pytest.approx(result["threshold"])
    x = np.zeros((3, loaded.spec.window, loaded.spec.n_channels), dtype=np.float32)
    errors = run(session(loaded.onnx), x)
    assert errors.shape == (3, 1) and np.isfinite(health.score(errors)).all()
    assert loaded.tags["feature_snapshot"] == out["snapshot_id"]
