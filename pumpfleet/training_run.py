"""The training driver's steps that need no Ray: each class's train and validation arrays,
the experiment's record in the workspace (for ``--resume``), every trial tracked as an
MLflow run under the experiment's parent run, and the summary once the winners are
registered (``pumpfleet.registration``). ``ray_jobs.train`` runs the search on Tune
between these steps.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pumpfleet.errors import DataError, InputError
from pumpfleet.features import window_features
from pumpfleet.lineage import code_tags
from pumpfleet.registry import Registry
from pumpfleet.search_space import SearchSpace, config_hash, trial_seed
from pumpfleet.settings import Settings
from pumpfleet.snapshot import Snapshot
from pumpfleet.training import Arrays

log = logging.getLogger(__name__)

EXPERIMENT = "pumpfleet-train"
LATEST = "LATEST.json"  # under the Tune folder: the last experiment, for --resume
TRACKED = "mlflow_runs.json"  # in an experiment folder: trial id → MLflow run id
RUL_METRICS = ("rmse", "mae", "phm08", "auc", "train_loss")  # logged per epoch

# A class's training data as the trials get it: train and val arrays, the spec as JSON.
ClassData = tuple[Arrays, Arrays, str]


def class_arrays(snap: Snapshot, cls: str, split: str) -> Arrays:
    """One class's standardised windows and labels of one split."""
    spec = snap.spec(cls)
    raw, cols = snap.load(cls, split)
    return Arrays(
        x=window_features(raw, spec),
        rul=cols["rul_hours"].astype(np.float32),
        failure=cols["failure_within_horizon"].astype(np.int8),
    )


def load_data(snap: Snapshot, classes: list[str] | None = None) -> dict[str, ClassData]:
    """Every class of the snapshot (or of ``classes`` that it has) with both train and
    val windows; only those classes are read."""
    data: dict[str, ClassData] = {}
    wanted = snap.classes if classes is None else [c for c in snap.classes if c in classes]
    for cls in wanted:
        train, val = class_arrays(snap, cls, "train"), class_arrays(snap, cls, "val")
        if len(train) == 0 or len(val) == 0:
            log.warning("class %s skipped: %d train / %d val windows", cls, len(train), len(val))
            continue
        data[cls] = (train, val, snap.spec(cls).model_dump_json())
    if not data and classes is None:
        raise DataError(
            f"snapshot {snap.id} has no class with both train and val windows "
            "(each class needs at least 3 pumps for a split)"
        )
    return data


def only_classes(
    data: dict[str, ClassData], classes: list[str] | None, snap: Snapshot
) -> dict[str, ClassData]:
    """``data`` of ``classes`` only (None: all); a class without data is an InputError."""
    if classes is None:
        return data
    missing = sorted(set(classes) - set(data))
    if missing:
        raise InputError(f"class {missing[0]!r} has no train and val windows in {snap.id}")
    return {c: data[c] for c in classes}


@dataclass(frozen=True)
class Experiment:
    """A training experiment as recorded in the workspace: its Tune folder, snapshot,
    classes, parent MLflow run and search space."""

    path: Path
    snapshot: str
    classes: list[str]
    parent_run: str
    space: SearchSpace
    tags: dict[str, str]


def lineage_tags(snap: Snapshot, **extra: str) -> dict[str, str]:
    """The tags every run and version of a training experiment carries."""
    return {**code_tags(), "feature_snapshot": snap.id, **extra}


def start_experiment(
    settings: Settings, registry: Registry, snap: Snapshot, space: SearchSpace, names: list[str]
) -> Experiment:
    """The parent MLflow run of a search of ``names``, and the experiment's record
    (``LATEST.json``), written before any trial runs so that ``--resume`` finds it."""
    tags = lineage_tags(snap)
    parent = registry.start_run(
        EXPERIMENT,
        f"train-{snap.id}",
        params={**space.model_dump(), "classes": names},
        tags={**tags, "config_hash": config_hash(space.model_dump())},
    )
    path = settings.tune_dir / f"train-{snap.id}-{int(time.time())}"
    settings.tune_dir.mkdir(parents=True, exist_ok=True)
    (settings.tune_dir / LATEST).write_text(
        json.dumps(
            {
                "path": str(path),
                "snapshot": snap.id,
                "classes": names,
                "parent_run": parent,
                "space": space.model_dump(),
            }
        )
    )
    return Experiment(path, snap.id, names, parent, space, tags)


def unfinished_experiment(settings: Settings) -> Experiment:
    """The last experiment, if it did not finish (else an InputError: nothing to resume)."""
    latest = settings.tune_dir / LATEST
    if not latest.exists():
        raise InputError(f"nothing to resume: no training experiment under {settings.tune_dir}")
    record = json.loads(latest.read_text())
    if record.get("finished"):
        raise InputError(f"nothing to resume: {record['path']} finished")
    return Experiment(
        Path(record["path"]),
        record["snapshot"],
        record["classes"],
        record["parent_run"],
        SearchSpace.model_validate(record["space"]),
        {**code_tags(), "feature_snapshot": record["snapshot"]},
    )


def tracked_runs(experiment: Path) -> dict[str, str]:
    """The trial → MLflow run map an experiment's :class:`TrialTracker` kept."""
    path = experiment / TRACKED
    return json.loads(path.read_text()) if path.exists() else {}


class TrialTracker:
    """Every trial as an MLflow run under the experiment's parent, written from one
    process (the driver: one writer for SQLite). The trial → run map is kept in the
    experiment folder, so a resumed experiment goes on logging into the same runs."""

    def __init__(
        self,
        settings: Settings,
        parent_run_id: str,
        tags: dict[str, str],
        experiment: Path,
        metrics: tuple[str, ...] = RUL_METRICS,
    ) -> None:
        self.tracking_uri = settings.tracking_uri
        self.artifact_root = settings.artifact_root
        self.parent = parent_run_id
        self.tags = tags
        self.metrics = metrics
        self.state_file = experiment / TRACKED
        self.runs: dict[str, str] = tracked_runs(experiment)
        self._registry: Registry | None = None

    def __getstate__(self) -> dict[str, Any]:  # pickled with the Tune experiment
        return {**self.__dict__, "_registry": None}

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = Registry(self.tracking_uri, self.artifact_root)
        return self._registry

    def run(self, trial_id: str, config: dict[str, Any]) -> str:
        """The trial's MLflow run, started (and the map saved) on first use."""
        if trial_id not in self.runs:
            self.runs[trial_id] = self.registry.start_run(
                EXPERIMENT,
                f"{config['pump_class']}-{trial_id}",
                params=config,
                tags={
                    **self.tags,
                    "pump_class": config["pump_class"],
                    "tune.trial_id": trial_id,
                    "config_hash": config_hash(config),
                    "seed": str(trial_seed(config)),
                },
                parent_run_id=self.parent,
            )
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            self.state_file.write_text(json.dumps(self.runs))
        return self.runs[trial_id]

    def result(self, trial_id: str, config: dict[str, Any], result: dict[str, Any]) -> None:
        """An epoch's report: its metrics at step ``epoch``."""
        metrics: dict[str, Any] = {k: result[k] for k in self.metrics if k in result}
        self.registry.log_metrics(self.run(trial_id, config), metrics, step=int(result["epoch"]))

    def completed(self, trial_id: str, config: dict[str, Any]) -> None:
        self.registry.end_run(self.run(trial_id, config), "FINISHED")

    def failed(self, trial_id: str, config: dict[str, Any], status: str, error: str) -> None:
        run = self.run(trial_id, config)
        self.registry.set_tags(run, {"error": status, "error_file": error})
        self.registry.end_run(run, "FAILED")


def best_metric(history: pd.DataFrame | None, metric: str) -> float:
    """A trial's best (lowest) ``metric`` over its epochs; inf if it reported none."""
    if history is None or metric not in history:
        return float("inf")
    return float(history[metric].min())


def finish_experiment(
    settings: Settings,
    registry: Registry,
    experiment: Experiment,
    registered: dict[str, Any],
    trials: int,
    failed: dict[str, int],
    started: float,
) -> dict[str, Any]:
    """Each class's winning metric on the parent run, which ends; the experiment marked
    finished; the job's summary."""
    metric = experiment.space.metric
    registry.log_metrics(
        experiment.parent_run, {f"{c}.{metric}": r["val_metric"] for c, r in registered.items()}
    )
    registry.end_run(experiment.parent_run)
    latest = settings.tune_dir / LATEST
    if latest.exists():
        latest.write_text(json.dumps({**json.loads(latest.read_text()), "finished": True}))
    return {
        "snapshot_id": experiment.snapshot,
        "trials": trials,
        "failed_trials": failed,
        "classes": registered,
        "seconds": round(time.monotonic() - started, 1),
    }
