"""Evaluation, promotion, rollback and the audit trail on a real MLflow (SQLite in a
temp folder) and a small hand-written feature snapshot, with no Ray: models that predict
a constant RUL, so which one is better is known."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pumpfleet import lifecycle
from pumpfleet.errors import RegistryError
from pumpfleet.evaluation_run import run_evaluate
from pumpfleet.features import FeatureSpec, Regimes
from pumpfleet.onnx_io import to_onnx
from pumpfleet.registry import CHALLENGER, CHAMPION, Registry, model_name
from pumpfleet.settings import Settings, get_settings
from pumpfleet_cli.main import main

NAME = model_name("esp")
CAP = 100.0
SPEC = FeatureSpec(
    pump_class="esp",
    channels=["motor_temp", "flow"],
    window=3,
    stride=1,
    interval_seconds=3600,
    rul_cap_hours=CAP,
    horizon_hours=20,
    mean=[70.0, 100.0],
    std=[5.0, 10.0],
    setting_names=["speed_setpoint"],
    regimes=Regimes(
        settings=["speed_setpoint"],
        center=[[1000.0], [2000.0]],
        scale=[500.0],
        mean=[[70.0, 100.0], [75.0, 110.0]],
        std=[[5.0, 10.0], [5.0, 10.0]],
        rows=[10, 10],
    ),
)
LAYOUT = ["motor_temp", "flow", "speed_setpoint"]
HOLDOUT_RUL, TRAIN_RUL = 30.0, 90.0
T0 = datetime(2026, 5, 18, 9, 0, tzinfo=UTC)


def write_snapshot(features: Path) -> None:
    """Holdout: two pumps at two sites, 120 windows each, alternating two regimes, all
    30 h from failure; train: one pump always 90 h out (the baseline predicts 90 h)."""
    rows: list[dict[str, Any]] = []
    for split, pump, site, n, rul in [
        ("holdout", "esp-h1", "s1", 120, HOLDOUT_RUL),
        ("holdout", "esp-h2", "s2", 120, HOLDOUT_RUL),
        ("train", "esp-t1", "s1", 60, TRAIN_RUL),
    ]:
        for i in range(n):
            window = np.tile([70.0, 100.0, 1000.0 if i % 2 else 2000.0], (SPEC.window, 1))
            rows.append(
                {
                    "pump_id": pump,
                    "site": site,
                    "split": split,
                    "end_time": 1_700_000_000_000 + i * 3_600_000,
                    "rul_hours": rul,
                    "failure_within_horizon": int(rul <= SPEC.horizon_hours),
                    "window": window.reshape(-1).astype(np.float32),
                }
            )
    flat = np.concatenate([r.pop("window") for r in rows])
    table = pa.Table.from_pylist(rows).cast(
        pa.schema(
            [
                ("pump_id", pa.string()),
                ("site", pa.string()),
                ("split", pa.string()),
                ("end_time", pa.timestamp("ms", tz="UTC")),
                ("rul_hours", pa.float32()),
                ("failure_within_horizon", pa.int8()),
            ]
        )
    )
    table = table.append_column(
        "window", pa.FixedSizeListArray.from_arrays(pa.array(flat), SPEC.window * len(LAYOUT))
    )
    part = features / "snap1" / "windows" / "pump_class=esp"
    part.mkdir(parents=True)
    pq.write_table(table, part / "part-0.parquet")
    manifest = {"specs": {"esp": SPEC.model_dump(mode="json")}, "channels": LAYOUT}
    (features / "snap1" / "manifest.json").write_text(json.dumps(manifest))
    (features / "LATEST").write_text("snap1")


def register(reg: Registry, rul_hours: float, parity_on_run: bool = False) -> str:
    """A model that predicts ``rul_hours`` for every window, registered as challenger,
    with its ONNX parity recorded as train.py records it (version tag, or run tag)."""
    import torch

    class Constant(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.out = torch.tensor([rul_hours / CAP, 0.1])

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[:, 0, :2] * 0.0 + self.out

    run_id = reg.start_run("pumpfleet-train", f"constant-{rul_hours}")
    uri = reg.log_model(run_id, to_onnx(Constant(), SPEC.window, 2), SPEC, {}, {})
    parity = {"onnx_parity_max_abs": "1.00e-07"}
    if parity_on_run:
        reg.set_tags(run_id, parity)
    reg.end_run(run_id)
    version = reg.register(uri, NAME, tags={} if parity_on_run else parity)
    reg.set_alias(NAME, CHALLENGER, version)
    return version


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Settings, Registry]]:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("PUMPFLEET_HOME", str(tmp_path / "ws"))
    monkeypatch.setenv("PUMPFLEET_USER", "alice")
    get_settings.cache_clear()
    settings = Settings(home=tmp_path / "ws")
    write_snapshot(settings.features_dir)
    yield settings, Registry(settings.tracking_uri, settings.artifact_root)
    get_settings.cache_clear()


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, list[str]]:
    with pytest.raises(SystemExit) as exc:  # a usage error exits from inside argparse
        raise SystemExit(main(list(argv)))
    captured = capsys.readouterr()
    return int(exc.value.code or 0), captured.out, captured.err.strip().splitlines()


def test_evaluate_gates_per_slice_promotes_and_records(ws: tuple[Settings, Registry]) -> None:
    settings, reg = ws
    good = register(reg, HOLDOUT_RUL)
    first = run_evaluate(settings, who="bob", now=T0)["classes"]["esp"]
    assert first["promoted"] and first["champion"] == good
    assert first["reason"].startswith("first model: promoted: rmse 0.000 beats baseline 60.000")
    report = first["challenger_report"]
    assert report["rmse"] == pytest.approx(0.0, abs=1e-3)
    assert {d: sorted(v) for d, v in report["slices"].items()} == {
        "site": ["s1", "s2"],
        "regime": ["r0", "r1"],
        "rul": ["20-100h"],
    }
    assert report["slices"]["site"]["s1"]["n"] == 120
    assert 0 < report["latency_p50_ms"] < 50
    assert report["size_bytes"] == len(reg.load_version(NAME, good).onnx)
    assert report["onnx_parity_max_abs"] == 1e-7
    assert first["baseline_report"]["rmse"] == pytest.approx(TRAIN_RUL - HOLDOUT_RUL)

    # A worse challenger, whose parity is a tag of its training run (older versions).
    bad = register(reg, 80.0, parity_on_run=True)
    second = run_evaluate(settings, who="bob", now=T0 + timedelta(hours=1))["classes"]["esp"]
    assert not second["promoted"] and second["champion"] == good
    assert second["reason"].startswith(f"vs champion v{good}: rejected: overall: rmse 50.000")
    failed = [line.split(":")[0] for line in second["reasons"] if line.startswith("FAIL")]
    assert failed == [
        "FAIL overall",
        "FAIL slice regime=r0",
        "FAIL slice regime=r1",
        "FAIL slice rul=20-100h",
        "FAIL slice site=s1",
        "FAIL slice site=s2",
    ]
    assert "PASS parity: max |torch - onnx| 1.0e-07 <= 1e-05" in second["reasons"]
    assert reg.version_tags(NAME, bad)["eval.decision"] == "kept"

    # The decision is an MLflow run, its gates and both reports an artifact.
    run = reg.client.get_run(second["mlflow_run_id"])
    assert run.data.tags["decision"] == "reject" and run.data.tags["mlflow.user"] == "bob"
    assert run.data.metrics["champion.rmse"] == pytest.approx(0.0, abs=1e-3)
    decision = reg.client.download_artifacts(run.info.run_id, "decision.json")
    assert json.loads(Path(decision).read_text())["reasons"] == second["reasons"]

    trail = lifecycle.history(reg, "esp")
    assert [(r.action, r.version, r.previous, r.who, r.when) for r in trail] == [
        ("promote", good, None, "bob", T0),
        ("reject", bad, good, "bob", T0 + timedelta(hours=1)),
    ]
    assert trail[0].source == "evaluate" and "first model: promoted" in trail[0].why


def test_promote_rollback_and_history_on_the_command_line(
    ws: tuple[Settings, Registry], capsys: pytest.CaptureFixture[str]
) -> None:
    settings, reg = ws
    good = register(reg, HOLDOUT_RUL)
    code, out, _ = cli(capsys, "promote", "--class", "esp", "--version", f"v{good}")
    assert code == 0 and "PASS overall: rmse 0.000 beats baseline 60.000" in out
    assert out.splitlines()[-1] == f"esp: v{good} is champion, was none"

    bad = register(reg, 80.0)
    code, out, err = cli(capsys, "promote", "--class", "esp", "--version", bad)
    assert code == 2 and err == [
        f"pumpfleet promote: error: esp v{bad} not promoted: 6 gate(s) failed; "
        "--force --reason TEXT overrides the gates"
    ]
    assert "FAIL slice site=s2: rmse 50.000 vs champion 0.000" in out
    assert reg.aliases(NAME) == {CHAMPION: good, CHALLENGER: bad}  # a rejected one never

    refusals = {
        ("--version", bad, "--force"): "--force needs --reason: say why the gates are overridden",
        ("--version", "9"): f"{NAME} has no version '9'",
        ("--version", good): f"esp: v{good} is the champion already",
        ("--version", "x1"): "--version must be like 3 or v3, got 'x1'",
    }
    for args, message in refusals.items():
        code, _, err = cli(capsys, "promote", "--class", "esp", *args)
        assert code == 2 and len(err) == 1 and message in err[0], (args, err)
    code, _, err = cli(capsys, "promote", "--class", "pogo", "--version", "1")
    assert err == ["pumpfleet promote: error: unknown class 'pogo' (registered: esp)"]

    code, out, _ = cli(
        capsys, "promote", "--class", "esp", "--version", bad, "--force", "--reason", "site fix"
    )
    assert code == 0 and out.strip() == f"esp: v{bad} is champion, was v{good} (forced: site fix)"
    assert reg.aliases(NAME) == {CHAMPION: bad, lifecycle.PREVIOUS_CHAMPION: good, CHALLENGER: bad}

    code, out, _ = cli(capsys, "rollback", "--class", "esp", "--reason", "alarms at s2")
    assert code == 0 and out.strip() == f"esp: champion rolled back to v{good}, was v{bad}"
    assert reg.aliases(NAME) == {CHAMPION: good, CHALLENGER: bad}
    code, _, err = cli(capsys, "rollback", "--class", "esp")
    assert code == 2 and err == [
        "pumpfleet rollback: error: esp: no previous champion to roll back to"
    ]

    code, out, _ = cli(capsys, "history", "--class", "esp")
    lines = out.splitlines()
    assert lines[:2] == [NAME, f"aliases: champion v{good}, challenger v{bad}"]
    assert lines[2].split() == [
        "when",
        "(UTC)",
        "action",
        "version",
        "champion",
        "before",
        "who",
        "why",
    ]
    rows = [line.split()[2:6] for line in lines[4:]]
    assert rows == [
        ["promote", f"v{good}", "-", "alice"],
        ["force-promote", f"v{bad}", f"v{good}", "alice"],
        ["rollback", f"v{good}", f"v{bad}", "alice"],
    ]
    assert lines[5].endswith("site fix") and lines[6].endswith("alarms at s2")

    # Every move is also a run in the audit experiment, under the user's name.
    exp = reg.client.get_experiment_by_name(lifecycle.AUDIT_EXPERIMENT)
    runs = reg.client.search_runs([exp.experiment_id])
    assert sorted(r.data.tags["action"] for r in runs) == ["force-promote", "promote", "rollback"]
    assert {r.data.tags["mlflow.user"] for r in runs} == {"alice"}

    # The version rolled back is not promoted again by evaluate, however good it looks.
    r = run_evaluate(settings)["classes"]["esp"]
    assert not r["promoted"] and r["champion"] == good
    assert r["reason"].startswith(f"v{bad} was rolled back") and "alarms at s2" in r["reason"]


def test_history_of_a_class_never_promoted(
    ws: tuple[Settings, Registry], capsys: pytest.CaptureFixture[str]
) -> None:
    _, reg = ws
    v = register(reg, HOLDOUT_RUL)
    code, out, _ = cli(capsys, "history", "--class", "esp")
    assert code == 0 and out.splitlines() == [
        NAME,
        f"aliases: challenger v{v}",
        "no promotion, rollback or rejection recorded",
    ]


def test_a_failed_second_alias_write_undoes_the_first(
    ws: tuple[Settings, Registry], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, reg = ws
    v1, v2 = register(reg, HOLDOUT_RUL), register(reg, 50.0)
    lifecycle.promote(reg, "esp", v1, who="a", why="first", now=T0)
    before = reg.aliases(NAME)
    set_alias = reg.set_alias

    def flaky(name: str, alias: str, version: str) -> None:
        if alias == lifecycle.PREVIOUS_CHAMPION:
            raise ConnectionError("registry went away")
        set_alias(name, alias, version)

    monkeypatch.setattr(reg, "set_alias", flaky)
    with pytest.raises(RegistryError, match="setting previous-champion failed, nothing changed"):
        lifecycle.promote(reg, "esp", v2, who="a", why="second", now=T0)
    assert reg.aliases(NAME) == before
    assert [r.action for r in lifecycle.history(reg, "esp")] == ["promote"]  # no record

    monkeypatch.setattr(reg, "set_alias", set_alias)
    lifecycle.promote(reg, "esp", v2, who="a", why="second", now=T0 + timedelta(seconds=1))

    def gone(name: str, alias: str) -> None:
        raise ConnectionError("registry went away")

    monkeypatch.setattr(reg, "delete_alias", gone)
    with pytest.raises(RegistryError, match="setting previous-champion failed, nothing changed"):
        lifecycle.rollback(reg, "esp", who="a", why="undo", now=T0 + timedelta(seconds=2))
    # Nothing changed: v2 champion (and still the challenger it was registered as), v1 before it.
    assert reg.aliases(NAME) == {CHAMPION: v2, CHALLENGER: v2, lifecycle.PREVIOUS_CHAMPION: v1}

    # When putting the first write back fails too, the error says where things stand.
    def down(name: str, alias: str, version: str) -> None:
        if alias == CHAMPION and version == v2:
            raise ConnectionError("still down")
        set_alias(name, alias, version)

    monkeypatch.setattr(reg, "set_alias", down)
    with pytest.raises(RegistryError, match="undoing champion failed too") as exc:
        lifecycle.rollback(reg, "esp", who="a", why="undo", now=T0 + timedelta(seconds=3))
    assert f"'champion': '{v1}'" in str(exc.value)


def test_the_user_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUMPFLEET_USER", "ci-bot")
    assert lifecycle.current_user() == "ci-bot"
    monkeypatch.delenv("PUMPFLEET_USER")
    assert lifecycle.current_user() not in ("", "ci-bot")


def register_anomaly(reg: Registry) -> str:
    """A constant-error health model registered as ``pumpfleet-esp-anomaly@challenger``."""
    import torch

    from pumpfleet.health import calibrate
    from pumpfleet.registry import anomaly_model_name

    class Error(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x * x).mean(dim=(1, 2)).unsqueeze(1)

    health = calibrate(np.linspace(0.0, 1.0, 100), "conv_ae", 0.05)
    run_id = reg.start_run("pumpfleet-train", "anomaly")
    config = {"kind": "anomaly", "model_kind": "conv_ae", "health": health.model_dump()}
    uri = reg.log_model(run_id, to_onnx(Error(), SPEC.window, 2), SPEC, {}, config)
    reg.end_run(run_id)
    return reg.register_as(uri, anomaly_model_name("esp"), CHALLENGER, tags={"gate": "passed"})


def test_anomaly_models_have_their_own_champion_rollback_and_trail(
    ws: tuple[Settings, Registry], capsys: pytest.CaptureFixture[str]
) -> None:
    from pumpfleet.registry import anomaly_model_name

    _, reg = ws
    rul = register(reg, HOLDOUT_RUL)
    lifecycle.promote(reg, "esp", rul, who="a", why="rul first", now=T0)
    a1, a2 = register_anomaly(reg), register_anomaly(reg)
    code, out, _ = cli(capsys, "promote", "--kind", "anomaly", "--class", "esp", "--version", a1)
    assert code == 0 and out.strip() == f"pumpfleet-esp-anomaly: v{a1} is champion, was none"
    code, out, _ = cli(capsys, "promote", "--kind", "anomaly", "--class", "esp", "--version", a2)
    assert code == 0 and reg.version_by_alias(anomaly_model_name("esp"), CHAMPION) == a2
    # The RUL model's champion and trail are untouched by the health model's moves.
    assert reg.version_by_alias(NAME, CHAMPION) == rul
    assert [r.action for r in lifecycle.history(reg, "esp")] == ["promote"]
    code, out, _ = cli(capsys, "rollback", "--kind", "anomaly", "--class", "esp", "--reason", "x")
    assert code == 0 and reg.version_by_alias(anomaly_model_name("esp"), CHAMPION) == a1
    trail = lifecycle.history(reg, "esp", "anomaly")
    assert [(r.action, r.version, r.kind) for r in trail] == [
        ("promote", a1, "anomaly"),
        ("promote", a2, "anomaly"),
        ("rollback", a1, "anomaly"),
    ]
    # A version once rolled back is not promoted again without --force.
    code, _, err = cli(capsys, "promote", "--kind", "anomaly", "--class", "esp", "--version", a2)
    assert code == 2 and "was rolled back" in err[-1] and "--force" in err[-1]
    code, out, _ = cli(capsys, "history", "--kind", "anomaly", "--class", "esp")
    assert code == 0 and out.splitlines()[0] == "pumpfleet-esp-anomaly"
    code, _, err = cli(capsys, "rollback", "--kind", "anomaly", "--class", "rod")
    assert code == 2 and err[-1].endswith(
        "unknown class for anomaly models 'rod' (registered: esp)"
    )


def test_an_anomaly_model_replaces_the_champion_only_if_no_worse() -> None:
    from pumpfleet.anomaly_training import anomaly_verdict

    def det(f1: float, far: float) -> dict[str, float | None]:
        return {"f1": f1, "far": far, "positives": 10.0}

    assert anomaly_verdict(det(0.5, 2.0), None)[0]
    assert anomaly_verdict(det(0.5, 2.0), ("3", None))[0]  # champion cannot read the data
    ok, why = anomaly_verdict(det(0.8, 2.5), ("3", det(0.8, 2.0)))
    assert ok and why == "F1 0.800 vs champion v3 0.800, false alarms 2.5% vs 2.0%"
    assert not anomaly_verdict(det(0.79, 1.0), ("3", det(0.8, 2.0)))[0]  # lower F1
    assert not anomaly_verdict(det(0.9, 3.5), ("3", det(0.8, 2.0)))[0]  # more false alarms
    ok, why = anomaly_verdict(None, ("3", det(0.8, 2.0)))
    assert not ok and why == "no labelled faults to compare with champion v3"


def test_a_retrain_starts_an_online_test_of_challengers_it_did_not_promote(
    ws: tuple[Settings, Registry], capsys: pytest.CaptureFixture[str]
) -> None:
    from pumpfleet.retraining import start_tests
    from pumpfleet.routing import SHADOW_TAG, WEIGHT_TAG

    settings, reg = ws
    v1, v2 = register(reg, HOLDOUT_RUL), register(reg, 50.0)
    evaluated = {"esp": {"challenger": v2, "champion": v1, "promoted": False}}
    assert start_tests(settings, evaluated, None, None) == {}  # not asked: nothing set
    assert WEIGHT_TAG not in reg.model_state(NAME)[1]
    started = start_tests(settings, evaluated, 0.25, True)
    assert started == {"esp": {WEIGHT_TAG: "0.25", SHADOW_TAG: "true"}}
    assert {k: reg.model_state(NAME)[1][k] for k in started["esp"]} == started["esp"]
    # A promoted challenger is the champion: no test of it against itself.
    promoted = {"esp": {"challenger": v2, "champion": v2, "promoted": True}}
    assert start_tests(settings, promoted, 0.5, None) == {}
    code, _, err = cli(capsys, "retrain", "--ab-weight", "1.5")
    assert code == 2 and "--ab-weight must be between 0 and 1, got '1.5'" in err[-1]
