from __future__ import annotations

from pathlib import Path

import pytest

from pumpfleet.settings import Settings


def test_defaults_live_in_the_workspace(tmp_path: Path) -> None:
    s = Settings(home=tmp_path)
    assert s.tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert s.features_dir == tmp_path / "features"
    assert s.ray_address is None


def test_cluster_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PUMPFLEET_HOME", str(tmp_path))
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    s = Settings()
    assert s.home == tmp_path.resolve()
    assert s.ray_address == "ray://head:10001"
    assert s.tracking_uri == "http://mlflow:5000"


def test_bad_setting_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUMPFLEET_NUM_CPUS", "0")
    with pytest.raises(ValueError, match="num_cpus"):
        Settings()
