"""The training driver's bookkeeping without Ray or Tune: every trial an MLflow run under
the experiment's parent (kept across a resume), and the experiment's record that
``--resume`` reads, on a real MLflow (SQLite in a temp folder)."""

from __future__ import annotations

import json
import pickle
import time
from pathlib import Path

import pytest

from pumpfleet.errors import InputError
from pumpfleet.registry import Registry
from pumpfleet.search_space import SearchSpace, config_hash
from pumpfleet.settings import Settings
from pumpfleet.snapshot import Snapshot
from pumpfleet.training_run import (
    EXPERIMENT,
    LATEST,
    TrialTracker,
    best_metric,
    finish_experiment,
    start_experiment,
    unfinished_experiment,
)


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return Settings(home=tmp_path / "ws")


def test_every_trial_is_a_run_under_the_parent_kept_across_a_resume(settings: Settings) -> None:
    reg = Registry(settings.tracking_uri, settings.artifact_root)
    parent = reg.start_run(EXPERIMENT, "parent")
    folder = settings.tune_dir / "train-x"
    tracker = TrialTracker(settings, parent, {"feature_snapshot": "snap1"}, folder)
    config = {"pump_class": "esp", "lr": 0.01, "seed": 3, "sample": 1}
    run = tracker.run("t1", config)
    assert tracker.run("t1", config) == run  # one run per trial
    tracker.result("t1", config, {"epoch": 1, "rmse": 9.0, "auc": 0.7, "trial_id": "t1"})
    tracker.result("t1", config, {"epoch": 2, "rmse": 8.0})
    tracker.completed("t1", config)
    tracker.failed("t2", config, "ERROR", "/tmp/error.txt")
    recorded = reg.client.get_run(run)
    assert recorded.info.status == "FINISHED" and recorded.data.params["lr"] == "0.01"
    assert recorded.data.tags["mlflow.parentRunId"] == parent
    assert recorded.data.tags["feature_snapshot"] == "snap1"
    assert recorded.data.tags["config_hash"] == config_hash(config)
    assert recorded.data.tags["seed"] == "1003" and recorded.data.tags["tune.trial_id"] == "t1"
    history = reg.client.get_metric_history(run, "rmse")
    assert [(m.step, m.value) for m in history] == [(1, 9.0), (2, 8.0)]
    assert "trial_id" not in recorded.data.metrics  # only the tracked metrics
    failed = reg.client.get_run(tracker.runs["t2"])
    assert failed.info.status == "FAILED" and failed.data.tags["error"] == "ERROR"
    # Tune pickles its callbacks: without the registry; a resumed driver reads the map.
    assert pickle.loads(pickle.dumps(tracker))._registry is None
    again = TrialTracker(settings, parent, {}, folder, metrics=("val_loss",))
    assert again.runs == {"t1": run, "t2": failed.info.run_id}


def test_the_experiment_record_is_what_resume_reads(settings: Settings) -> None:
    reg = Registry(settings.tracking_uri, settings.artifact_root)
    snap = Snapshot(root="unused", id="snap1", manifest={"specs": {}})
    with pytest.raises(InputError, match="nothing to resume: no training experiment"):
        unfinished_experiment(settings)
    space = SearchSpace(epochs=2)
    started = time.monotonic()
    experiment = start_experiment(settings, reg, snap, space, ["esp", "rod"])
    assert experiment.path.parent == settings.tune_dir
    assert experiment.path.name.startswith("train-snap1-")
    resumed = unfinished_experiment(settings)
    assert (resumed.path, resumed.snapshot, resumed.classes, resumed.parent_run) == (
        experiment.path,
        "snap1",
        ["esp", "rod"],
        experiment.parent_run,
    )
    assert resumed.space == space and resumed.tags["feature_snapshot"] == "snap1"
    winners = {"esp": {"val_metric": 4.5}, "rod": {"val_metric": 7.0}}
    out = finish_experiment(settings, reg, experiment, winners, 4, {"esp": 0, "rod": 1}, started)
    assert (out["snapshot_id"], out["trials"], out["failed_trials"]) == (
        "snap1",
        4,
        {"esp": 0, "rod": 1},
    )
    parent = reg.client.get_run(experiment.parent_run)
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics == {"esp.rmse": 4.5, "rod.rmse": 7.0}
    assert json.loads((settings.tune_dir / LATEST).read_text())["finished"]
    with pytest.raises(InputError, match=r"nothing to resume: .* finished"):
        unfinished_experiment(settings)


def test_a_trial_without_the_metric_ranks_last() -> None:
    import pandas as pd

    assert best_metric(pd.DataFrame({"rmse": [9.0, 7.5, 8.0]}), "rmse") == 7.5
    assert best_metric(pd.DataFrame({"mae": [1.0]}), "rmse") == float("inf")
    assert best_metric(None, "rmse") == float("inf")
