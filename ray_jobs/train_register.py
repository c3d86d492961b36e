"""Each class's winner registered as soon as that class's trials end, while the other
classes' trials still run: a Tune callback counts the trials that end per class and,
at a class's last, starts a Ray task that exports, checks and registers its best trial
(``pumpfleet.registration.register_winner``). The tasks run in one actor per driver,
which has the libraries imported; the driver collects them once the search ends. A
class whose trials ended before this driver started (a resumed experiment) is
registered then, from the experiment's results, by the same actor.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune.experiment import Trial

from pumpfleet.registration import Winner, load_checkpoint, register_winner
from pumpfleet.registry import Registry
from pumpfleet.settings import Settings
from pumpfleet.snapshot import open_snapshot
from pumpfleet.training import Arrays
from pumpfleet.training_run import best_metric

log = logging.getLogger(__name__)


@ray.remote(num_cpus=0)
class _Registrar:
    """Registers winners in a process that imported torch, ONNX, MLflow and matplotlib
    once: a fresh worker spends seconds of CPU on those imports, the CPU that the trials
    still running need. No CPU of its own, so it runs beside the trials; one thread, as
    they have."""

    def __init__(self) -> None:
        import matplotlib
        import torch

        import pumpfleet.onnx_io  # noqa: F401  (onnx, onnxruntime)

        matplotlib.use("Agg")
        import matplotlib.pyplot

        torch.set_num_threads(1)
        self._registries: dict[tuple[str, str | None], Registry] = {}

    def register(
        self,
        settings: Settings,
        snapshot: str,
        cls: str,
        winner: Winner,
        val: Arrays,
        tags: dict[str, str],
        metric: str,
    ) -> dict[str, Any]:
        key = (settings.tracking_uri, settings.artifact_root)
        if key not in self._registries:
            self._registries[key] = Registry(*key)
        snap = open_snapshot(settings.features_uri, snapshot)
        return register_winner(self._registries[key], snap, cls, winner, val, tags, metric)


_registrar: tuple[str, Any] | None = None  # (Ray node/job, actor handle) of this driver


def registrar() -> Any:
    """This driver's registrar actor, started on first use (again after a new
    ``ray.init``); starting it early lets its imports overlap the first trials."""
    global _registrar
    context = ray.get_runtime_context()
    # A new local cluster numbers its jobs from 1 again; its node id is new.
    job = f"{context.get_node_id()}/{context.get_job_id()}"
    if _registrar is None or _registrar[0] != job:
        _registrar = (job, _Registrar.remote())  # type: ignore[attr-defined]
    return _registrar[1]


def _pick(candidates: list[tuple[str, float, float, Any, dict[str, Any]]]) -> int:
    """Index of the best (lowest metric) candidate; the first of equals, in trial order."""
    order = sorted(range(len(candidates)), key=lambda i: (candidates[i][1], candidates[i][0]))
    return order[0]


def winner_from_trials(trials: list[Trial], metric: str, runs: dict[str, str]) -> Winner | None:
    """The best of a class's trials that completed, as Tune's controller holds them (each
    one's best checkpoint by ``metric``); None if none has a checkpoint."""
    candidates = []
    for t in trials:
        manager = t.run_metadata.checkpoint_manager
        best = manager.best_checkpoint_result if manager is not None else None
        if best is None or best.checkpoint is None:
            continue
        analysis = t.metric_analysis
        candidates.append(
            (
                t.trial_id,
                float(analysis.get(metric, {}).get("min", float("inf"))),
                float(analysis.get("rmse", {}).get("min", float("inf"))),
                best.checkpoint,
                t.config,
            )
        )
    if not candidates:
        return None
    trial_id, val_metric, val_rmse, checkpoint, config = candidates[_pick(candidates)]
    with checkpoint.as_directory() as d:
        state, model_config = load_checkpoint(Path(d))
    return Winner(state, model_config, config, runs[trial_id], val_metric, val_rmse)


def winner_from_results(results: list[Any], metric: str, runs: dict[str, str]) -> Winner | None:
    """The same choice from an experiment's results (``tune.ResultGrid`` entries)."""
    candidates = []
    for r in results:
        ckpt = r.get_best_checkpoint(metric, "min") if r.error is None else None
        if ckpt is None:
            continue
        history = r.metrics_dataframe
        candidates.append(
            (
                str(r.metrics["trial_id"]),
                best_metric(history, metric),
                best_metric(history, "rmse"),
                ckpt,
                r.config,
            )
        )
    if not candidates:
        return None
    trial_id, val_metric, val_rmse, checkpoint, config = candidates[_pick(candidates)]
    with checkpoint.as_directory() as d:
        state, model_config = load_checkpoint(Path(d))
    return Winner(state, model_config, config, runs[trial_id], val_metric, val_rmse)


class RegisterWhenDone(tune.Callback):
    """Starts a class's registration task when the last of its ``expected`` trials ends
    (completed, stopped early by ASHA, or failed for good). ``start(cls, completed)``
    makes the task from the class's completed trials and returns its ref, or None when
    the class has no winner."""

    def __init__(self, expected: dict[str, int], start: Callable[[str, list[Trial]], Any]) -> None:
        self.expected = expected
        self.start = start
        self.ended: dict[str, dict[str, Trial | None]] = {c: {} for c in expected}
        self.tasks: dict[str, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        # Pickled with the Tune experiment: a restored copy starts nothing (the driver
        # that restores registers what is left from the results).
        return {"expected": {}, "start": None, "ended": {}, "tasks": {}}

    def _ended(self, trial: Trial, completed: bool) -> None:
        cls = str(trial.config.get("pump_class"))
        if self.start is None or cls not in self.expected or cls in self.tasks:
            return
        self.ended[cls][trial.trial_id] = trial if completed else None
        if len(self.ended[cls]) == self.expected[cls]:
            done = [t for _, t in sorted(self.ended[cls].items()) if t is not None]
            self.tasks[cls] = self.start(cls, done)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._ended(trial, completed=True)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._ended(trial, completed=False)


def start_registration(
    settings: Settings,
    snapshot: str,
    cls: str,
    winner: Winner,
    val: Arrays,
    tags: dict[str, str],
    metric: str,
) -> Any:
    """The registration task of one class's winner (its ref)."""
    log.info("%s: trials ended, registering its best", cls)
    return registrar().register.remote(settings, snapshot, cls, winner, val, tags, metric)
