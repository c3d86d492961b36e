"""`pumpfleet demo` starts from an empty workspace: an earlier run's is moved aside to
`<workspace>.previous`, and only where every store lies in it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from pumpfleet.settings import Settings
from pumpfleet_cli.demo_workspace import outside_stores, set_aside


def _filled(home: Path, marker: str) -> Settings:
    (home / "predictions").mkdir(parents=True)
    (home / "predictions" / "part.parquet").write_text(marker)
    (home / "mlflow.db").write_text(marker)
    return Settings(home=home)


def test_an_earlier_run_is_moved_aside_and_the_one_before_it_replaced(tmp_path: Path) -> None:
    home = tmp_path / "ws"
    settings = _filled(home, "first run")
    assert set_aside(settings) == tmp_path / "ws.previous"
    assert not home.exists()
    assert (tmp_path / "ws.previous" / "mlflow.db").read_text() == "first run"

    _filled(home, "second run")
    assert set_aside(settings) == tmp_path / "ws.previous"
    assert not home.exists()
    kept = tmp_path / "ws.previous"
    assert (kept / "predictions" / "part.parquet").read_text() == "second run"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ws.previous"]


def test_a_previous_that_is_not_a_demo_workspace_is_never_replaced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    home = tmp_path / "ws"
    settings = _filled(home, "run")
    (tmp_path / "ws.previous").mkdir()
    (tmp_path / "ws.previous" / "notes.txt").write_text("mine")
    with caplog.at_level(logging.WARNING, logger="pumpfleet_cli.demo_workspace"):
        assert set_aside(settings) is None
    (tmp_path / "ws.previous" / "notes.txt").unlink()
    (tmp_path / "ws.previous").rmdir()
    (tmp_path / "ws.previous").write_text("a file")
    assert set_aside(settings) is None
    assert (tmp_path / "ws.previous").read_text() == "a file"
    assert (home / "mlflow.db").read_text() == "run"
    assert "is not replaced" in caplog.text


def test_a_missing_or_empty_workspace_is_left_alone(tmp_path: Path) -> None:
    assert set_aside(Settings(home=tmp_path / "missing")) is None
    (tmp_path / "empty").mkdir()
    assert set_aside(Settings(home=tmp_path / "empty")) is None
    assert (tmp_path / "empty").is_dir()
    assert not (tmp_path / "empty.previous").exists()


def test_a_folder_holding_what_pumpfleet_did_not_write_stays_in_place(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    home = tmp_path / "project"
    _filled(home, "run")
    (home / "README.md").write_text("mine")
    (home / ".git").mkdir()
    with caplog.at_level(logging.WARNING, logger="pumpfleet_cli.demo_workspace"):
        assert set_aside(Settings(home=home)) is None
    assert (home / "README.md").read_text() == "mine"
    assert not (tmp_path / "project.previous").exists()
    assert "(.git, README.md)" in caplog.text


def test_stores_outside_the_workspace_keep_it_in_place(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    home = tmp_path / "ws"
    _filled(home, "run")
    settings = Settings(
        home=home,
        storage_uri="s3://fleet/pumpfleet",
        mlflow_tracking_uri="http://127.0.0.1:5000",
    )
    assert outside_stores(Settings(home=home)) == []
    assert outside_stores(settings) == [
        "data_uri",
        "features_uri",
        "predictions_uri",
        "reports_uri",
        "bundles_uri",
        "mlflow_tracking_uri",
    ]
    with caplog.at_level(logging.WARNING, logger="pumpfleet_cli.demo_workspace"):
        assert set_aside(settings) is None
    assert (home / "mlflow.db").read_text() == "run"
    assert "data_uri, features_uri" in caplog.text and "carries over" in caplog.text
