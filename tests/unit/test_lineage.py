"""Lineage by content: a snapshot id changes exactly when what made the windows changes
(the input files' content, the ingest settings, the feature code) and the same input
and code are "nothing to do"; the MLflow dataset digest is that id; runs record the git
commit their submitter passes on, and ``--reproduce`` says when the code differs."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pumpfleet import lineage
from pumpfleet.ingestion import plan_ingest
from pumpfleet.settings import Settings, get_settings
from pumpfleet.simulator import SimulationConfig, simulate
from pumpfleet.snapshot import open_snapshot
from pumpfleet.windows import WindowConfig
from tests.unit import ingest_local

CFG = WindowConfig(stride=8)


@pytest.fixture
def fleet(tmp_path: Path) -> str:
    source = str(tmp_path / "fleet")
    simulate(SimulationConfig(pumps=12, days=8, seed=2), source)
    return source


def _sid(source: str, root: str, cfg: WindowConfig = CFG) -> str:
    return plan_ingest(source, root, cfg).snapshot_id


def _sizes(source: str) -> list[tuple[str, int]]:
    """What the id was made of before content digests: each file's path and size."""
    return sorted((str(p), p.stat().st_size) for p in Path(source).rglob("*.parquet"))


def test_the_same_input_and_code_are_the_same_snapshot_and_nothing_to_do(
    fleet: str, tmp_path: Path
) -> None:
    root = str(tmp_path / "features")
    first = ingest_local.ingest(fleet, root, CFG)
    assert first["up_to_date"] is False
    again = plan_ingest(fleet, root, CFG)
    assert again.snapshot_id == first["snapshot_id"]
    assert again.up_to_date is not None and again.up_to_date["up_to_date"] is True
    # the same content elsewhere, read from another folder: the same id
    copy = tmp_path / "copy"
    for f in Path(fleet).rglob("*"):
        if f.is_file():
            (copy / f.relative_to(fleet)).parent.mkdir(parents=True, exist_ok=True)
            (copy / f.relative_to(fleet)).write_bytes(f.read_bytes())
    assert _sid(str(copy), root) == first["snapshot_id"]
    manifest = open_snapshot(root).manifest
    assert manifest["feature_code"] == lineage.feature_code_hash()
    assert set(manifest["inputs"]) == {
        str(f.relative_to(fleet)) for f in Path(fleet).rglob("*.parquet") if "faults" not in str(f)
    }


def test_a_same_size_rewrite_of_a_file_is_a_new_snapshot(fleet: str, tmp_path: Path) -> None:
    root = str(tmp_path / "features")
    path = next(Path(fleet, "readings").rglob("*.parquet"))
    table = pq.read_table(path)
    # Uncompressed and plain-encoded: changing one value keeps the file's size exactly.
    pq.write_table(table, path, compression="NONE", use_dictionary=False)
    before, sizes = _sid(fleet, root), _sizes(fleet)
    i = table.schema.get_field_index("motor_temp")
    values = table.column(i).to_pylist()
    values[5] += 0.5
    changed = table.set_column(i, table.field(i), pa.array(values, table.field(i).type))
    pq.write_table(changed, path, compression="NONE", use_dictionary=False)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns - 10**9))  # even an older mtime
    assert _sizes(fleet) == sizes  # paths and sizes, the old id's inputs, did not change
    assert _sid(fleet, root) != before


def test_a_new_failure_event_is_a_new_snapshot(fleet: str, tmp_path: Path) -> None:
    root = str(tmp_path / "features")
    before = _sid(fleet, root)
    path = next(Path(fleet, "events").rglob("*.parquet"))
    events = pq.read_table(path)
    frame = events.to_pandas()
    extra = frame.iloc[[0]].assign(timestamp=frame["timestamp"].max() + pd.Timedelta(hours=1))
    pq.write_table(
        events.from_pandas(pd.concat([frame, extra]), schema=events.schema, preserve_index=False),
        path,
    )
    assert _sid(fleet, root) != before  # labels come from the events


@pytest.mark.parametrize(
    "changed",
    [
        {"window": 50},
        {"stride": 4},
        {"horizon_hours": 24.0},
        {"rul_cap_hours": 100.0},
        {"future_fraction": 0.0},
        {"regimes": False},
    ],
)
def test_each_changed_ingest_setting_is_a_new_snapshot(
    fleet: str, tmp_path: Path, changed: dict[str, Any]
) -> None:
    root = str(tmp_path / "features")
    assert _sid(fleet, root, CFG.model_copy(update=changed)) != _sid(fleet, root)


def test_changed_feature_code_is_a_new_snapshot(
    fleet: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert {"pumpfleet.validation", "pumpfleet.regimes", "pumpfleet.windows"} <= set(
        lineage.FEATURE_CODE
    )
    root = str(tmp_path / "features")
    module = tmp_path / "code" / "pf_feature_rule.py"
    module.parent.mkdir()
    module.write_text("LIMIT = 3\n")
    monkeypatch.syspath_prepend(str(module.parent))
    monkeypatch.setattr(lineage, "FEATURE_CODE", (*lineage.FEATURE_CODE, "pf_feature_rule"))
    before = _sid(fleet, root)
    assert _sid(fleet, root) == before  # the same code: the same id
    module.write_text("LIMIT = 4\n")  # a one-character change in a validation rule
    assert _sid(fleet, root) != before
    module.write_text("LIMIT = 3\n")
    assert _sid(fleet, root) == before


def test_the_mlflow_dataset_digest_is_the_snapshot_id(fleet: str, tmp_path: Path) -> None:
    from pumpfleet.registry import Registry

    settings = Settings(home=tmp_path / "ws")
    ingest_local.ingest(fleet, settings.features_uri, CFG)
    snap = open_snapshot(settings.features_uri)
    registry = Registry(settings.tracking_uri, settings.artifact_root)
    run_id = registry.start_run("pumpfleet-test", "digest")
    registry.log_snapshot_input(run_id, snap, snap.classes[0])
    (given,) = registry.client.get_run(run_id).inputs.dataset_inputs
    assert given.dataset.digest == snap.id


def test_runs_record_the_commit_their_submitter_passes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pumpfleet import job_options
    from ray_jobs import triggers

    monkeypatch.setenv("PUMPFLEET_GIT_COMMIT", "0123abc")
    get_settings.cache_clear()
    try:
        tags = lineage.code_tags()
        assert tags["git.commit"] == "0123abc" and "git.dirty" not in tags
        assert lineage.submission_env() == {"PUMPFLEET_GIT_COMMIT": "0123abc"}
        submitted: dict[str, Any] = {}

        class Client:
            def __init__(self, address: str, headers: Any = None) -> None:
                pass

            def submit_job(self, **kwargs: Any) -> str:
                submitted.update(kwargs)
                return str(kwargs["submission_id"])

        monkeypatch.setattr("ray.job_submission.JobSubmissionClient", Client)
        options = job_options.RetrainOptions(classes=["esp"])
        triggers.submit_retrain("http://head:8265", options, runtime_env={"pip": ["x"]})
        assert submitted["runtime_env"] == {
            "pip": ["x"],
            "env_vars": {"PUMPFLEET_GIT_COMMIT": "0123abc"},
        }
    finally:
        get_settings.cache_clear()
    # From a checkout, without the variable: the checkout's commit.
    monkeypatch.delenv("PUMPFLEET_GIT_COMMIT")
    checkout = lineage.code_tags(Settings())
    if lineage._git("rev-parse", "HEAD"):
        assert len(checkout["git.commit"]) == 40 and checkout["git.dirty"] in ("True", "False")


def test_init_ray_hands_the_commit_to_the_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    from ray_jobs import _ray

    seen: dict[str, Any] = {}
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: seen.update(kw))
    _ray.init_ray(Settings(git_commit="feedbeef", num_cpus=1))
    assert seen["runtime_env"]["env_vars"]["PUMPFLEET_GIT_COMMIT"] == "feedbeef"
    # A Ray job's driver: the job's runtime env has it already (Ray refuses it twice).
    job = {"runtime_env": {"env_vars": {"PUMPFLEET_GIT_COMMIT": "feedbeef", "X": "1"}}}
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps(job))
    _ray.init_ray(Settings(git_commit="feedbeef", num_cpus=1))
    assert "PUMPFLEET_GIT_COMMIT" not in seen["runtime_env"]["env_vars"]
    assert seen["runtime_env"]["env_vars"]["PUMPFLEET_HOME"]


def test_differences_name_the_commit_and_each_library() -> None:
    recorded = {"git.commit": "aaa", "lib.torch": "2.0", "lib.numpy": "2.4.6", "other": "x"}
    current = {"git.commit": "bbb", "lib.torch": "2.13.0", "lib.numpy": "2.4.6"}
    assert lineage.differences(recorded, current) == [
        "git commit bbb here, the run had aaa",
        "torch 2.13.0 here, the run had 2.0",
    ]
    assert lineage.differences(current, current) == []
    assert lineage.differences({"lib.onnx": "1.0"}, {}) == ["onnx missing here, the run had 1.0"]


def test_reproduce_warns_when_the_commit_or_a_library_differs(
    fleet: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from pumpfleet.registry import Registry
    from pumpfleet.reproduction import reproduce

    settings = Settings(home=tmp_path / "ws")
    ingest_local.ingest(fleet, settings.features_uri, CFG)
    snap = open_snapshot(settings.features_uri)
    cls = next(c for c in snap.classes if snap.manifest["summary"]["windows"][c]["val"] > 0)
    registry = Registry(settings.tracking_uri, settings.artifact_root)
    here = lineage.code_tags(settings)
    tags = {**here, "git.commit": "0" * 40, "lib.torch": "1.0.0", "feature_snapshot": snap.id}
    params = {"pump_class": cls, "lr": 0.01, "epochs": 1, "seed": 0, "kind": "cnn", "hidden": 8}
    run_id = registry.start_run("pumpfleet-train", "recorded", params=params, tags=tags)
    registry.log_metrics(run_id, {"rmse": 1.0}, step=1)
    registry.end_run(run_id)
    with caplog.at_level(logging.WARNING, logger="pumpfleet.reproduction"):
        out = reproduce(settings, run_id)
    assert out["code_differs"] == [
        f"git commit {here.get('git.commit', 'unknown')} here, the run had {'0' * 40}",
        f"torch {here['lib.torch']} here, the run had 1.0.0",
    ]
    warned = [r.getMessage() for r in caplog.records if r.name == "pumpfleet.reproduction"]
    said = f"run {run_id} was recorded with other code: "
    assert warned == [said + line for line in out["code_differs"]]
    same = registry.start_run("pumpfleet-train", "same code", params=params)
    registry.set_tags(same, {**here, "feature_snapshot": snap.id})
    registry.log_metrics(same, {"rmse": 1.0}, step=1)
    registry.end_run(same)
    assert reproduce(settings, same)["code_differs"] == []
