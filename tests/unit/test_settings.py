from __future__ import annotations

import os
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


def test_what_the_engines_read_from_the_environment_is_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from pumpfleet.settings import apply_engine_env, engine_env

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("PUMPFLEET_JOBS_ADDRESS", "")
    monkeypatch.setenv("PUMPFLEET_USER", "ci-bot")
    s = Settings(home=tmp_path)
    assert (s.mlflow_http_max_retries, s.mlflow_http_timeout_s) == (1, 30)
    assert s.jobs_address is None and s.user == "ci-bot"
    env = engine_env(s)
    assert env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "1"
    assert env["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] == "1"
    assert env["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert "MLFLOW_DISABLE_TELEMETRY" not in engine_env(Settings(home=tmp_path, telemetry=True))
    monkeypatch.setenv("PUMPFLEET_MLFLOW_HTTP_TIMEOUT_S", "7")
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_TIMEOUT", raising=False)
    s = Settings(home=tmp_path)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")  # the operator's, kept
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", raising=False)
    apply_engine_env(s)
    try:
        assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "7"
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "2"
        assert os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] == "1"
    finally:
        for key in ("MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"):
            os.environ.pop(key, None)
