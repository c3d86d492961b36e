"""Bad input on the command line: one line that says what was wrong, exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pumpfleet_cli.main import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str]]:
    with pytest.raises(SystemExit) as exc:
        raise SystemExit(main(list(argv)))
    err = capsys.readouterr().err.strip().splitlines()
    return int(exc.value.code or 0), err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["simulate", "--pumps", "0"], "--pumps must be at least 1, got 0"),
        (["simulate", "--pumps", "many"], "--pumps must be an integer, got 'many'"),
        (["simulate", "--days", "-3"], "--days must be at least 1, got -3"),
        (["ingest", "--source", "/nonexistent/fleet"], "--source /nonexistent/fleet: no such"),
        (["ingest", "--window", "0"], "--window must be at least 1"),
        (["serve", "--challenger-weight", "2"], "--challenger-weight must be in [0, 1], got 2.0"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["train", "--kind", "anomaly", "--resume"], "--resume is for --kind rul"),
        (["train", "--promote"], "--promote is for --kind anomaly"),
        (["train", "--kind", "anomaly", "--target-far", "2"], "target_far"),
        (["train", "--kind", "health"], "invalid choice: 'health'"),
        (["retrain", "--ab-weight", "x"], "--ab-weight must be between 0 and 1, got 'x'"),
    ],
)
def test_bad_input_gets_one_line(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    argv: list[str],
    message: str,
) -> None:
    monkeypatch.setenv("PUMPFLEET_HOME", str(tmp_path))
    code, err = run(capsys, *argv)
    assert code == 2
    assert len(err) == 1, err
    assert message in err[0]
    assert "Traceback" not in err[0]


def test_missing_snapshot_and_registry_are_clear(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from pumpfleet.settings import get_settings

    monkeypatch.setenv("PUMPFLEET_HOME", str(tmp_path))
    get_settings.cache_clear()
    try:
        code, err = run(capsys, "evaluate")
        assert code == 2 and err == [
            f"pumpfleet evaluate: error: no feature snapshot under {tmp_path / 'features'}; "
            "run `pumpfleet ingest`"
        ]
    finally:
        get_settings.cache_clear()


def test_simulate_writes_and_reports(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = main(["simulate", "--pumps", "4", "--days", "2", "--out", str(tmp_path / "f")])
    assert code == 0
    # 4 pumps x 2 days x 24 hourly readings; no pump fails or is serviced in two days.
    summary = json.loads(capsys.readouterr().out)
    assert summary == {"pumps": 4, "readings": 192, "failures": 0, "maintenance": 0}


def test_serve_without_a_champion_refuses_to_start(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from pumpfleet.errors import RegistryError
    from pumpfleet.settings import Settings
    from serve_apps import run as serve_run

    with pytest.raises(RegistryError, match="no champion model in sqlite:"):
        serve_run.start(Settings(home=tmp_path), 8000, 0.2, insecure_dev=True)


def test_search_space_values_are_checked() -> None:
    from pydantic import ValidationError

    from pumpfleet.search_space import SearchSpace

    with pytest.raises(ValidationError, match="greater than 0"):
        SearchSpace(lr=[0.01, -1.0])
    with pytest.raises(ValidationError, match="at least 1 item"):
        SearchSpace(hidden=[])


def test_simulate_injects_faults_from_a_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import json

    spec = tmp_path / "inject.json"
    spec.write_text(
        json.dumps(
            {
                "faults": [
                    {
                        "kind": "duplicate",
                        "classes": ["rod"],
                        "start_day": 0,
                        "duration_days": 1,
                        "rate": 0.5,
                    }
                ]
            }
        )
    )
    out = tmp_path / "f"
    assert (
        main(["simulate", "--pumps", "4", "--days", "2", "--inject", str(spec), "--out", str(out)])
        == 0
    )
    counts = json.loads(capsys.readouterr().out)
    assert counts["fault_duplicate"] == 12  # half of one rod pump's first 24 hours
    assert counts["readings"] == 4 * 2 * 24 + 12
    assert (out / "faults" / "injected.parquet").exists()


@pytest.mark.parametrize(
    "body, message",
    [
        ('{"faults": [{"kind": "meteor"}]}', "faults.0.kind: Input should be"),
        ('{"faults": [{"kind": "spike", "classes": ["submarine"]}]}', "unknown classes"),
        ('{"fault": []}', "fault: Extra inputs are not permitted"),
        ("not json", "Invalid JSON"),
    ],
)
def test_a_bad_injection_file_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, body: str, message: str
) -> None:
    spec = tmp_path / "inject.json"
    spec.write_text(body)
    code, err = run(capsys, "simulate", "--inject", str(spec), "--out", str(tmp_path / "f"))
    assert code == 2 and len(err) == 1 and message in err[0], err


def test_ingest_single_process_runs_without_ray(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``pumpfleet ingest --single-process``: the same array functions in this process,
    no Ray started; every row accounted for and the snapshot recorded in MLflow."""
    import ray_jobs._ray
    import ray_jobs.ingest
    from pumpfleet.settings import get_settings

    def no_ray(*args: object, **kwargs: object) -> None:
        raise AssertionError("--single-process reached Ray")

    monkeypatch.setattr(ray_jobs._ray, "init_ray", no_ray)
    monkeypatch.setattr(ray_jobs.ingest, "run_ingest", no_ray)
    monkeypatch.setenv("PUMPFLEET_HOME", str(tmp_path))
    get_settings.cache_clear()
    try:
        assert main(["simulate", "--pumps", "8", "--days", "12", "--out", str(tmp_path / "f")]) == 0
        capsys.readouterr()
        out = str(tmp_path / "features")
        argv = ["ingest", "--source", str(tmp_path / "f"), "--out", out, "--single-process"]
        assert main(argv) == 0
        summary = json.loads(capsys.readouterr().out)
        # The same on Ray Data: the snapshot exists, which is said without starting Ray.
        assert main(argv[:-1]) == 0
        again = json.loads(capsys.readouterr().out)
    finally:
        get_settings.cache_clear()
    assert summary["status"] == "success" and summary["pumps"] == 8
    assert summary["rows_in"] == 8 * 12 * 24 == summary["rows_valid"]
    assert summary["rows_quarantined"] == 0 and summary["mlflow_run_id"]
    # a pump is labelled where 168 h (the RUL cap) of its future are known: 12 days do
    windows = sum(n for splits in summary["windows"].values() for n in splits.values())
    assert windows > 0 and list(Path(out, summary["snapshot_id"]).rglob("*.parquet"))
    assert again["up_to_date"] is True and "mlflow_run_id" not in again
    same = ("snapshot_id", "status", "rows_in", "rows_valid", "rows_quarantined", "windows")
    assert {k: again[k] for k in same} == {k: summary[k] for k in same}


class RayReached(Exception):
    """What the test's stand-in for ``init_ray`` raises: the ingest chose Ray Data."""


def _ingest_engine(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *flags: str, ray_address: str = ""
) -> str:
    """Which engine ``pumpfleet ingest`` picks for a small fleet: "process" (it ingested
    here) or "ray" (it went to start Ray)."""
    import ray_jobs._ray
    from pumpfleet.settings import get_settings

    def ray_reached(*args: object, **kwargs: object) -> None:
        raise RayReached

    monkeypatch.setattr(ray_jobs._ray, "init_ray", ray_reached)
    monkeypatch.setenv("PUMPFLEET_HOME", str(tmp_path))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("PUMPFLEET_RAY_ADDRESS", raising=False)
    get_settings.cache_clear()
    try:
        if not (tmp_path / "f").exists():
            assert (
                main(["simulate", "--pumps", "4", "--days", "10", "--out", str(tmp_path / "f")])
                == 0
            )
        if ray_address:
            monkeypatch.setenv("PUMPFLEET_RAY_ADDRESS", ray_address)
            get_settings.cache_clear()
        out = str(tmp_path / f"features{len(flags)}{bool(ray_address)}")
        try:
            assert main(["ingest", "--source", str(tmp_path / "f"), "--out", out, *flags]) == 0
        except RayReached:
            return "ray"
    finally:
        get_settings.cache_clear()
    assert list(Path(out).rglob("*.parquet"))
    return "process"


def test_a_small_fleet_on_a_local_ray_is_ingested_in_process(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """By itself, ``pumpfleet ingest`` runs a small input (at most
    LOCAL_INGEST_MAX_ROWS rows) in its own process when it would start a local Ray, and
    goes to Ray Data when asked to (``--ray-data``) or when joined to a cluster."""
    assert _ingest_engine(monkeypatch, tmp_path) == "process"
    assert _ingest_engine(monkeypatch, tmp_path, "--ray-data") == "ray"
    assert _ingest_engine(monkeypatch, tmp_path, ray_address="ray://head:10001") == "ray"


def test_in_process_goes_by_the_input_rows() -> None:
    from types import SimpleNamespace
    from typing import Any, cast

    from pumpfleet.ingestion import in_process
    from pumpfleet.job_options import LOCAL_INGEST_MAX_ROWS

    def plan(rows: int) -> Any:
        return cast(Any, SimpleNamespace(rows_in=rows))

    assert in_process(plan(LOCAL_INGEST_MAX_ROWS), None)
    assert not in_process(plan(LOCAL_INGEST_MAX_ROWS + 1), None)
    assert not in_process(plan(10), "auto") and not in_process(plan(10), None, ray_data=True)


def test_single_process_and_ray_data_together_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, err = run(capsys, "ingest", "--source", str(tmp_path), "--single-process", "--ray-data")
    assert code == 2 and err == [
        "pumpfleet ingest: error: --single-process and --ray-data: choose one"
    ], err
