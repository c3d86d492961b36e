"""Training on Ray Tune: one search per pump class, the classes' searches in one Tune
experiment so that their trials share the cluster's CPUs, ASHA early stopping per class,
every trial tracked in MLflow; the best per class is registered as ``challenger``.
The steps around the search are ``pumpfleet.training_run`` and
``pumpfleet.registration``; a trial's loop is ``pumpfleet.training.fit``.

    python -m ray_jobs.train [--snapshot ID] [--config SPACE.yaml] [--epochs N]
    python -m ray_jobs.train --resume            # finish the last, interrupted experiment
    python -m ray_jobs.train --reproduce RUN_ID  # retrain one recorded trial, compare
"""

from __future__ import annotations

import argparse
import logging
import pickle
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from ray import tune
from ray.tune.experiment import Trial
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler

from pumpfleet.entry import exiting, run_main
from pumpfleet.features import FeatureSpec
from pumpfleet.job_options import add_train_args
from pumpfleet.registry import Registry
from pumpfleet.reproduction import reproduce
from pumpfleet.search_space import Asha, SearchSpace, space_from_args, train_config
from pumpfleet.settings import Settings, get_settings
from pumpfleet.snapshot import Snapshot, open_snapshot
from pumpfleet.training import fit
from pumpfleet.training_run import (
    RUL_METRICS,
    ClassData,
    Experiment,
    TrialTracker,
    finish_experiment,
    load_data,
    only_classes,
    start_experiment,
    tracked_runs,
    unfinished_experiment,
)
from ray_jobs._ray import cluster_cpus, init_ray
from ray_jobs.train_register import (
    RegisterWhenDone,
    start_registration,
    warm_up,
    winner_from_results,
    winner_from_trials,
)

log = logging.getLogger(__name__)

MAX_TRIAL_FAILURES = 2  # restarts of a trial from its checkpoint (a lost node)


def _trial(config: dict[str, Any], data: dict[str, ClassData]) -> None:
    """One Tune trial: train one class's model; report and checkpoint every epoch (the
    whole training state, so that an interrupted trial resumes where it stopped)."""
    torch.set_num_threads(1)  # one thread per trial: threads fight on shared cores
    train, val, spec_json = data[config["pump_class"]]
    spec = FeatureSpec.model_validate_json(spec_json)
    model_cfg, cfg = train_config(config)
    resume = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            resume = torch.load(Path(d) / "trainer.pt", weights_only=False)

    def on_epoch(
        epoch: int, report: dict[str, float | None], model: torch.nn.Module, state: dict[str, Any]
    ) -> None:
        with tempfile.TemporaryDirectory() as d:
            torch.save(model.state_dict(), Path(d) / "state.pt")
            torch.save(state, Path(d) / "trainer.pt")
            (Path(d) / "model_config.json").write_text(model_cfg.model_dump_json())
            metrics = {k: v for k, v in report.items() if v is not None}
            tune.report({**metrics, "epoch": epoch}, checkpoint=tune.Checkpoint.from_directory(d))

    fit(train, val, spec, cfg, on_epoch=on_epoch, resume=resume)


class PerClassAsha(FIFOScheduler):
    """ASHA within each pump class: one :class:`AsyncHyperBandScheduler` per class, so
    that a trial is only ever compared with trials of its own class (the classes' RUL
    scales differ), while all the classes' trials share one experiment and its CPUs."""

    def __init__(self, metric: str, max_t: int, asha: Asha) -> None:
        super().__init__()
        self._metric = metric
        self._max_t = max_t
        self._asha = asha
        self._by_class: dict[str, AsyncHyperBandScheduler] = {}

    def _of(self, trial: Trial) -> AsyncHyperBandScheduler:
        cls = str(trial.config["pump_class"])
        if cls not in self._by_class:
            self._by_class[cls] = AsyncHyperBandScheduler(
                time_attr="epoch",
                metric=self._metric,
                mode="min",
                max_t=self._max_t,
                grace_period=min(self._asha.grace_period, self._max_t),
                reduction_factor=self._asha.reduction_factor,
            )
        return self._by_class[cls]

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return True  # set at construction

    def on_trial_add(self, tune_controller: Any, trial: Trial) -> None:
        self._of(trial).on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> str:
        return str(self._of(trial).on_trial_result(tune_controller, trial, result))

    def on_trial_complete(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> None:
        self._of(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller: Any, trial: Trial) -> None:
        self._of(trial).on_trial_remove(tune_controller, trial)

    def on_trial_error(self, tune_controller: Any, trial: Trial) -> None:
        self._of(trial)._trial_info.pop(trial.trial_id, None)

    def stopped(self) -> dict[str, int]:
        return {c: s._num_stopped for c, s in sorted(self._by_class.items())}

    def debug_string(self) -> str:
        return "ASHA per class: " + ", ".join(f"{c} stopped {n}" for c, n in self.stopped().items())

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))


_ = TrialScheduler  # the interface PerClassAsha implements


class MlflowTracking(tune.Callback):
    """Tune's trial events to a :class:`pumpfleet.training_run.TrialTracker`: every
    trial an MLflow run, written from the driver."""

    def __init__(
        self,
        settings: Settings,
        parent_run_id: str,
        tags: dict[str, str],
        experiment: Path,
        metrics: tuple[str, ...] = RUL_METRICS,
    ) -> None:
        self.tracker = TrialTracker(settings, parent_run_id, tags, experiment, metrics)

    @property
    def runs(self) -> dict[str, str]:
        return self.tracker.runs

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.tracker.run(trial.trial_id, trial.config)

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        self.tracker.result(trial.trial_id, trial.config, result)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.tracker.completed(trial.trial_id, trial.config)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        error = getattr(trial, "error_file", None)
        self.tracker.failed(trial.trial_id, trial.config, str(trial.status), str(error))


class _WantedSnapshots(logging.Filter):
    """Tune warns when trials that checkpoint every epoch force experiment-state
    snapshots; here they are wanted (every checkpoint is kept, and a lost trial resumes
    from its last). Tune's own switch is an environment variable of the driver
    (TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S), so the warning is
    filtered from its logger instead, where a run starts."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Experiment state snapshotting has been triggered" not in record.getMessage()


_WANTED_SNAPSHOTS = _WantedSnapshots()


def _fit(tuner: tune.Tuner) -> tune.ResultGrid:
    # adding the same filter again is a no-op
    logging.getLogger("ray.tune.execution.experiment_state").addFilter(_WANTED_SNAPSHOTS)
    return tuner.fit()


def _trainable(data: dict[str, ClassData]) -> Any:
    return tune.with_resources(tune.with_parameters(_trial, data=data), {"cpu": 1})


def _registering(
    settings: Settings,
    snap: Snapshot,
    experiment: Experiment,
    data: dict[str, ClassData],
    tracking: MlflowTracking,
) -> RegisterWhenDone:
    """The callback that registers each class's winner as soon as its trials end."""
    metric = experiment.space.metric
    warm_up()  # the registering thread's imports overlap the first trials

    def start(cls: str, completed: list[Trial]) -> Any:
        winner = winner_from_trials(completed, metric, tracking.runs)
        if winner is None:
            return None
        val = data[cls][1]
        return start_registration(settings, snap.id, cls, winner, val, experiment.tags, metric)

    expected = dict.fromkeys(experiment.classes, experiment.space.trials_per_class)
    return RegisterWhenDone(expected, start)


def run_train(
    settings: Settings,
    snapshot: str = "latest",
    space: SearchSpace | None = None,
    classes: list[str] | None = None,
) -> dict[str, Any]:
    """Tune every class of a snapshot (or ``classes``); register each class's best as
    challenger."""
    started = time.monotonic()
    space = space or SearchSpace()
    snap = open_snapshot(settings.features_uri, snapshot)
    data = only_classes(load_data(snap, classes), classes, snap)
    registry = Registry(settings.tracking_uri, settings.artifact_root)
    registry.ping()  # before any training: an unreachable server fails the job now
    experiment = start_experiment(settings, registry, snap, space, sorted(data))
    tracking = MlflowTracking(settings, experiment.parent_run, experiment.tags, experiment.path)
    registering = _registering(settings, snap, experiment, data, tracking)
    scheduler = PerClassAsha(space.metric, space.epochs, space.asha)
    tuner = tune.Tuner(
        _trainable(data),
        param_space=space.param_space(experiment.classes),
        tune_config=tune.TuneConfig(
            # A trial's process goes on to the next trial: a new one would import torch
            # and fetch the data again, seconds of the CPUs the other trials are using.
            max_concurrent_trials=cluster_cpus(),
            scheduler=scheduler,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=experiment.path.name,
            storage_path=str(settings.tune_dir),
            # The tracking callback first: a trial's MLflow run is ended before its class
            # is registered.
            callbacks=[tracking, registering],
            # A trial whose node or process dies goes on from its last checkpoint on
            # another node (benchmarks/failover.py); one that fails by itself (a diverged
            # loss) fails again from the same state and is then recorded as failed.
            failure_config=tune.FailureConfig(max_failures=MAX_TRIAL_FAILURES),
            checkpoint_config=tune.CheckpointConfig(
                # Every checkpoint is kept (these models are tens of kB): after a hard kill,
                # the experiment state may name an older one than the last, and a deleted
                # one would make the trial unrecoverable.
                num_to_keep=None,
                checkpoint_score_attribute=space.metric,
                checkpoint_score_order="min",
            ),
            verbose=1,
        ),
    )
    grid = _fit(tuner)
    return _finish(
        settings, registry, snap, experiment, data, grid, tracking, started, registering.tasks
    )


def resume_train(settings: Settings) -> dict[str, Any]:
    """Finish the last experiment after an interruption: its unfinished trials go on from
    their last checkpoints, finished ones are kept, and the best per class is registered."""
    started = time.monotonic()
    experiment = unfinished_experiment(settings)
    snap = open_snapshot(settings.features_uri, experiment.snapshot)
    data = load_data(snap, experiment.classes)
    tuner = tune.Tuner.restore(
        str(experiment.path), trainable=_trainable(data), resume_errored=False
    )
    registry = Registry(settings.tracking_uri, settings.artifact_root)
    # Tune restores the callback it pickled; this one only reads the map it kept.
    tracking = MlflowTracking(settings, experiment.parent_run, experiment.tags, experiment.path)
    grid = _fit(tuner)
    # Tune runs the callbacks it pickled, which start nothing: every class registers here.
    return _finish(settings, registry, snap, experiment, data, grid, tracking, started, {}) | {
        "resumed": str(experiment.path)
    }


def _finish(
    settings: Settings,
    registry: Registry,
    snap: Snapshot,
    experiment: Experiment,
    data: dict[str, ClassData],
    grid: Any,
    tracking: MlflowTracking,
    started: float,
    tasks: dict[str, Any],
) -> dict[str, Any]:
    """Each class's best trial registered as its challenger (``tasks``: the registration
    tasks started while the search ran, by class; the other classes' start here); the
    experiment finished."""
    metric = experiment.space.metric
    trials = [grid[i] for i in range(len(grid))]
    # The callback that Tune ran may be a restored copy: read the trial → run map it kept.
    tracking.runs.update(tracked_runs(Path(str(grid.experiment_path))))
    failed: dict[str, int] = {}
    pending = dict(tasks)
    for cls in sorted(data):
        of_class = [r for r in trials if (r.config or {}).get("pump_class") == cls]
        failed[cls] = sum(r.error is not None for r in of_class)
        if cls not in pending:
            winner = winner_from_results(of_class, metric, tracking.runs)
            pending[cls] = winner and start_registration(
                settings, snap.id, cls, winner, data[cls][1], experiment.tags, metric
            )
    out: dict[str, Any] = {}
    for cls in sorted(data):
        if pending[cls] is None:
            log.error("class %s: every trial failed", cls)
            continue
        out[cls] = pending[cls].result()
    summary = finish_experiment(settings, registry, experiment, out, len(grid), failed, started)
    # The classes whose registration started while other trials could still run.
    return summary | {"registered_during_search": sorted(c for c, t in tasks.items() if t)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ray_jobs.train", description=__doc__)
    add_train_args(parser)
    args = parser.parse_args(argv)

    def job() -> dict[str, Any]:
        settings = get_settings()
        init_ray(settings)
        if args.resume:
            return resume_train(settings)
        if args.reproduce:
            return reproduce(settings, args.reproduce)
        return run_train(settings, args.snapshot, space_from_args(args), args.classes)

    return run_main(job)


if __name__ == "__main__":
    raise SystemExit(exiting(main()))
