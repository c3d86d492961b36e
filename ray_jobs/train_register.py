"""Each class's winner registered as soon as that class's trials end, while the other
classes' trials still run: a Tune callback counts the trials that end per class and,
at a class's last, starts exporting, checking and registering its best trial
(``pumpfleet.registration.register_winner``) in a thread of the driver; the driver
collects them once the search ends. A class whose trials ended before this driver
started (a resumed experiment) is registered then, from the experiment's results, the
same way.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.experiment import Trial

from pumpfleet.registration import Winner, load_checkpoint, register_winner
from pumpfleet.registry import Registry
from pumpfleet.settings import Settings
from pumpfleet.snapshot import open_snapshot
from pumpfleet.training import Arrays
from pumpfleet.training_run import best_metric

log = logging.getLogger(__name__)


# One registration at a time, in a thread of the driver, while Tune's loop (the driver's
# main thread) keeps the other classes' trials going. The driver has the libraries imported
# already, the MLflow credentials of whoever runs it and lives on the node the job does: a
# Ray actor would be placed on any node (a node lost takes the registrations on it along)
# and would see only the environment the workers were given, which holds no secrets.
_LOCK = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_registries: dict[tuple[str, str | None], Registry] = {}


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _LOCK:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pumpfleet-register")
        return _pool


def _imports() -> None:
    import matplotlib

    import pumpfleet.onnx_io  # noqa: F401  (onnx, onnxruntime)

    matplotlib.use("Agg")
    import matplotlib.pyplot


def warm_up() -> None:
    """Import what a registration needs (ONNX, onnxruntime, matplotlib) in the registering
    thread now, while the first trials start, not when the first class's trials end."""
    _executor().submit(_imports)


def _register(
    settings: Settings,
    snapshot: str,
    cls: str,
    winner: Winner,
    val: Arrays,
    tags: dict[str, str],
    metric: str,
) -> dict[str, Any]:
    key = (settings.tracking_uri, settings.artifact_root)
    with _LOCK:
        registry = _registries.get(key) or _registries.setdefault(key, Registry(*key))
    snap = open_snapshot(settings.features_uri, snapshot)
    return register_winner(registry, snap, cls, winner, val, tags, metric)


Candidate = tuple[str, float, float, Any, dict[str, Any]]  # trial, metric, rmse, ckpt, config


def _winner(candidates: list[Candidate], runs: dict[str, str]) -> Winner | None:
    """The best (lowest metric) candidate, the first of equals in trial order, loaded
    from its checkpoint; None without candidates."""
    if not candidates:
        return None
    best = min(candidates, key=lambda c: (c[1], c[0]))
    trial_id, val_metric, val_rmse, checkpoint, config = best
    with checkpoint.as_directory() as d:
        state, model_config = load_checkpoint(Path(d))
    return Winner(state, model_config, config, runs[trial_id], val_metric, val_rmse)


def winner_from_trials(trials: list[Trial], metric: str, runs: dict[str, str]) -> Winner | None:
    """The best of a class's trials that completed, as Tune's controller holds them (each
    one's best checkpoint by ``metric``); None if none has a checkpoint."""
    candidates: list[Candidate] = []
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
    return _winner(candidates, runs)


def winner_from_results(results: list[Any], metric: str, runs: dict[str, str]) -> Winner | None:
    """The same choice from an experiment's results (``tune.ResultGrid`` entries)."""
    candidates: list[Candidate] = []
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
    return _winner(candidates, runs)


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
) -> Future[dict[str, Any]]:
    """The registration of one class's winner, started in the driver's registering thread
    (its future)."""
    log.info("%s: trials ended, registering its best", cls)
    return _executor().submit(_register, settings, snapshot, cls, winner, val, tags, metric)
