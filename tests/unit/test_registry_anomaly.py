"""RUL and anomaly models side by side in one registry (MLflow on SQLite, no Ray)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pumpfleet.registry import Registry, anomaly_model_name, model_name


def test_anomaly_models_are_not_pump_classes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    reg = Registry(f"sqlite:///{tmp_path / 'mlflow.db'}", (tmp_path / "art").as_uri())
    for name in (model_name("esp"), model_name("rod"), anomaly_model_name("esp")):
        reg.client.create_registered_model(name)
    reg.client.create_registered_model(anomaly_model_name("pcp"))
    assert anomaly_model_name("esp") == "pumpfleet-esp-anomaly"
    assert reg.classes() == ["esp", "rod"]
    assert reg.anomaly_classes() == ["esp", "pcp"]
