"""Training on Ray Tune: one search per pump class, the classes' searches in one Tune
experiment so that their trials share the cluster's CPUs, ASHA early stopping per class,
every trial tracked in MLflow; the best per class is registered as ``challenger``.

    python -m ray_jobs.train [--snapshot ID] [--config SPACE.yaml] [--epochs N]
    python -m ray_jobs.train --resume            # finish the last, interrupted experiment
    python -m ray_jobs.train --reproduce RUN_ID  # retrain one recorded trial, compare
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import logging
import pickle
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from ray import tune
from ray.tune.experiment import Trial
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler

from pumpfleet.entry import run_main
from pumpfleet.errors import DataError, InputError, one_line
from pumpfleet.features import FeatureSpec, decode_outputs, window_features
from pumpfleet.job_options import add_train_args
from pumpfleet.lineage import code_tags
from pumpfleet.models import ModelConfig, build_model, describe
from pumpfleet.onnx_io import check_parity, to_onnx
from pumpfleet.registry import CHALLENGER, Registry, model_name
from pumpfleet.settings import Settings, get_settings
from pumpfleet.snapshot import Snapshot, open_snapshot
from pumpfleet.training import Arrays, TrainConfig, fit, predict
from ray_jobs._ray import cluster_cpus, init_ray

log = logging.getLogger(__name__)

EXPERIMENT = "pumpfleet-train"
MODEL_KEYS = set(ModelConfig.model_fields)
LATEST = "LATEST.json"  # under the Tune folder: the last experiment, for --resume
TRACKED = "mlflow_runs.json"  # in an experiment folder: trial id → MLflow run id
MAX_TRIAL_FAILURES = 2  # restarts of a trial from its checkpoint (a lost node)


class Asha(BaseModel):
    """ASHA early stopping, per class: a trial is stopped at a rung (every
    ``grace_period * reduction_factor^k`` epochs) unless it is in the top
    ``1/reduction_factor`` of its class's trials there."""

    model_config = ConfigDict(extra="forbid")
    grace_period: int = Field(default=2, ge=1)
    reduction_factor: float = Field(default=2.0, gt=1)


class SearchSpace(BaseModel):
    """One search per pump class, as data (``--config FILE``, YAML or JSON). Every list
    is a grid; ``samples`` repeats the grid with different seeds."""

    model_config = ConfigDict(extra="forbid")
    kind: list[str] = Field(default=["cnn"], min_length=1)
    lr: list[Annotated[float, Field(gt=0, lt=1)]] = Field(default=[3e-3, 1e-2], min_length=1)
    hidden: list[Annotated[int, Field(ge=4, le=512)]] = Field(default=[32], min_length=1)
    dropout: list[Annotated[float, Field(ge=0, lt=1)]] = Field(default=[0.1], min_length=1)
    batch_size: list[Annotated[int, Field(ge=1)]] = Field(default=[128], min_length=1)
    # Further ModelConfig fields to search, e.g. {"kernel": [3, 5]}.
    architecture: dict[str, list[Any]] = Field(default_factory=dict)
    samples: int = Field(default=1, ge=1)
    epochs: int = Field(default=8, ge=1)
    seed: int = 0
    metric: str = "rmse"  # validation metric to minimise (rmse, mae, phm08)
    asha: Asha = Field(default_factory=Asha)

    @model_validator(mode="after")
    def _models_are_valid(self) -> SearchSpace:
        for model in self.model_grid():
            try:
                ModelConfig(**model)
            except ValidationError as e:
                raise ValueError(f"model {model}: {one_line(e)}") from None
        if self.metric not in ("rmse", "mae", "phm08"):
            raise ValueError(f"metric must be rmse, mae or phm08, got {self.metric!r}")
        return self

    def model_grid(self) -> list[dict[str, Any]]:
        grid: dict[str, list[Any]] = {
            "kind": self.kind,
            "hidden": self.hidden,
            "dropout": self.dropout,
            **self.architecture,
        }
        unknown = set(grid) - MODEL_KEYS
        if unknown:
            raise ValueError(f"architecture: unknown model field {sorted(unknown)[0]!r}")
        keys = sorted(grid)
        return [
            dict(zip(keys, v, strict=True)) for v in itertools.product(*(grid[k] for k in keys))
        ]

    @property
    def trials_per_class(self) -> int:
        return len(self.model_grid()) * len(self.lr) * len(self.batch_size) * self.samples

    def param_space(self, classes: list[str]) -> dict[str, Any]:
        grid: dict[str, list[Any]] = {
            "pump_class": classes,
            "lr": self.lr,
            "batch_size": self.batch_size,
            "sample": list(range(self.samples)),
            "kind": self.kind,
            "hidden": self.hidden,
            "dropout": self.dropout,
            **self.architecture,
        }
        space: dict[str, Any] = {k: tune.grid_search(v) for k, v in grid.items()}
        return {**space, "epochs": self.epochs, "seed": self.seed, "metric": self.metric}

    @classmethod
    def from_file(cls, path: str, **overrides: Any) -> SearchSpace:
        import yaml

        try:
            text = Path(path).read_text()
        except OSError as e:
            raise InputError(f"--config {path}: {e.strerror or e}") from None
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise InputError(
                f"--config {path}: not YAML or JSON ({str(e).splitlines()[0]})"
            ) from None
        if not isinstance(data, dict):
            raise InputError(f"--config {path}: expected a mapping of search settings")
        try:
            return cls.model_validate({**data, **overrides})
        except ValidationError as e:
            raise InputError(f"--config {path}: {one_line(e)}") from None


def config_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


# --- the trial ----------------------------------------------------------------------


def _arrays(snap: Snapshot, cls: str, split: str) -> Arrays:
    spec = snap.spec(cls)
    raw, cols = snap.load(cls, split)
    return Arrays(
        x=window_features(raw, spec),
        rul=cols["rul_hours"].astype(np.float32),
        failure=cols["failure_within_horizon"].astype(np.int8),
    )


def trial_seed(config: dict[str, Any]) -> int:
    """A trial's seed: the search's, moved by the repeat (``sample``) it belongs to."""
    return int(config.get("seed", 0)) + 1000 * int(config.get("sample", 0))


def _train_config(config: dict[str, Any]) -> tuple[ModelConfig, TrainConfig]:
    model_cfg = ModelConfig(**{k: v for k, v in config.items() if k in MODEL_KEYS})
    cfg = TrainConfig(
        model=model_cfg,
        lr=config["lr"],
        epochs=config["epochs"],
        batch_size=config.get("batch_size", TrainConfig().batch_size),
        seed=trial_seed(config),
    )
    return model_cfg, cfg


def _trial(config: dict[str, Any], data: dict[str, Any]) -> None:
    """One Tune trial: train one class's model; report and checkpoint every epoch (the
    whole training state, so that an interrupted trial resumes where it stopped)."""
    torch.set_num_threads(1)  # one thread per trial: threads fight on shared cores
    train, val, spec_json = data[config["pump_class"]]
    spec = FeatureSpec.model_validate_json(spec_json)
    model_cfg, cfg = _train_config(config)
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
    """Tracks every trial as an MLflow run, from the driver (one writer for SQLite). The
    trial → run map is kept in the experiment folder, so a resumed experiment goes on
    logging into the same runs."""

    def __init__(
        self, settings: Settings, parent_run_id: str, tags: dict[str, str], experiment: Path
    ) -> None:
        self.tracking_uri = settings.tracking_uri
        self.artifact_root = settings.artifact_root
        self.parent = parent_run_id
        self.tags = tags
        self.state_file = experiment / TRACKED
        self.runs: dict[str, str] = (
            json.loads(self.state_file.read_text()) if self.state_file.exists() else {}
        )
        self._registry: Registry | None = None

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles its callbacks with the run
        return {**self.__dict__, "_registry": None}

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = Registry(self.tracking_uri, self.artifact_root)
        return self._registry

    def _run(self, trial: Trial) -> str:
        if trial.trial_id not in self.runs:
            cfg = trial.config
            self.runs[trial.trial_id] = self.registry.start_run(
                EXPERIMENT,
                f"{cfg['pump_class']}-{trial.trial_id}",
                params=cfg,
                tags={
                    **self.tags,
                    "pump_class": cfg["pump_class"],
                    "tune.trial_id": trial.trial_id,
                    "config_hash": config_hash(cfg),
                    "seed": str(trial_seed(cfg)),
                },
                parent_run_id=self.parent,
            )
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            self.state_file.write_text(json.dumps(self.runs))
        return self.runs[trial.trial_id]

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._run(trial)

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        keys = ("rmse", "mae", "phm08", "auc", "train_loss")
        metrics: dict[str, Any] = {k: result[k] for k in keys if k in result}
        self.registry.log_metrics(self._run(trial), metrics, step=int(result["epoch"]))

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.registry.end_run(self._run(trial), "FINISHED")

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        run = self._run(trial)
        error = getattr(trial, "error_file", None)
        self.registry.set_tags(run, {"error": str(trial.status), "error_file": str(error)})
        self.registry.end_run(run, "FAILED")


# --- the experiment -----------------------------------------------------------------


def _load_data(snap: Snapshot) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for cls in snap.classes:
        train, val = _arrays(snap, cls, "train"), _arrays(snap, cls, "val")
        if len(train) == 0 or len(val) == 0:
            log.warning("class %s skipped: %d train / %d val windows", cls, len(train), len(val))
            continue
        data[cls] = (train, val, snap.spec(cls).model_dump_json())
    if not data:
        raise DataError(
            f"snapshot {snap.id} has no class with both train and val windows "
            "(each class needs at least 3 pumps for a split)"
        )
    return data


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


def _trainable(data: dict[str, Any]) -> Any:
    return tune.with_resources(tune.with_parameters(_trial, data=data), {"cpu": 1})


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
    snap = open_snapshot(str(settings.features_dir), snapshot)
    data = _load_data(snap)
    if classes is not None:
        missing = sorted(set(classes) - set(data))
        if missing:
            raise InputError(f"class {missing[0]!r} has no train and val windows in {snap.id}")
        data = {c: data[c] for c in classes}
    names = sorted(data)

    registry = Registry(settings.tracking_uri, settings.artifact_root)
    registry.ping()  # before any training: an unreachable server fails the job now
    tags = {**code_tags(), "feature_snapshot": snap.id}
    parent = registry.start_run(
        EXPERIMENT,
        f"train-{snap.id}",
        params={**space.model_dump(), "classes": names},
        tags={**tags, "config_hash": config_hash(space.model_dump())},
    )
    name = f"train-{snap.id}-{int(time.time())}"
    (settings.tune_dir).mkdir(parents=True, exist_ok=True)
    (settings.tune_dir / LATEST).write_text(
        json.dumps(
            {
                "path": str(settings.tune_dir / name),
                "snapshot": snap.id,
                "classes": names,
                "parent_run": parent,
                "space": space.model_dump(),
            }
        )
    )
    tracking = MlflowTracking(settings, parent, tags, settings.tune_dir / name)
    scheduler = PerClassAsha(space.metric, space.epochs, space.asha)
    tuner = tune.Tuner(
        _trainable(data),
        param_space=space.param_space(names),
        tune_config=tune.TuneConfig(
            max_concurrent_trials=cluster_cpus(), scheduler=scheduler, reuse_actors=False
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=str(settings.tune_dir),
            callbacks=[tracking],
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
    return _finish(settings, registry, snap, space, data, grid, tracking, tags, parent, started)


def resume_train(settings: Settings) -> dict[str, Any]:
    """Finish the last experiment after an interruption: its unfinished trials go on from
    their last checkpoints, finished ones are kept, and the best per class is registered."""
    started = time.monotonic()
    latest = settings.tune_dir / LATEST
    if not latest.exists():
        raise InputError(f"nothing to resume: no training experiment under {settings.tune_dir}")
    record = json.loads(latest.read_text())
    if record.get("finished"):
        raise InputError(f"nothing to resume: {record['path']} finished")
    space = SearchSpace.model_validate(record["space"])
    snap = open_snapshot(str(settings.features_dir), record["snapshot"])
    data = {c: v for c, v in _load_data(snap).items() if c in record["classes"]}
    tuner = tune.Tuner.restore(record["path"], trainable=_trainable(data), resume_errored=False)
    registry = Registry(settings.tracking_uri, settings.artifact_root)
    tags = {**code_tags(), "feature_snapshot": snap.id}
    # Tune restores the callback it pickled; this one only reads the map it kept.
    tracking = MlflowTracking(settings, record["parent_run"], tags, Path(record["path"]))
    grid = _fit(tuner)
    return _finish(
        settings, registry, snap, space, data, grid, tracking, tags, record["parent_run"], started
    ) | {"resumed": record["path"]}


def _finish(
    settings: Settings,
    registry: Registry,
    snap: Snapshot,
    space: SearchSpace,
    data: dict[str, Any],
    grid: Any,
    tracking: MlflowTracking,
    tags: dict[str, str],
    parent: str,
    started: float,
) -> dict[str, Any]:
    trials = [grid[i] for i in range(len(grid))]
    # The callback that Tune ran may be a restored copy: read the trial → run map it kept.
    tracking.runs |= _tracked(grid)
    out: dict[str, Any] = {}
    failed: dict[str, int] = {}
    for cls in sorted(data):
        of_class = [r for r in trials if (r.config or {}).get("pump_class") == cls]
        failed[cls] = sum(r.error is not None for r in of_class)
        scored = [(r, r.get_best_checkpoint(space.metric, "min")) for r in of_class]
        scored = [(r, c) for r, c in scored if c is not None and r.error is None]
        if not scored:
            log.error("class %s: every trial failed", cls)
            continue
        best, ckpt = min(scored, key=lambda rc: _best_metric(rc[0], space.metric))
        out[cls] = _register(registry, snap, cls, best, ckpt, data[cls], tracking, tags, space)
    registry.log_metrics(parent, {f"{c}.{space.metric}": r["val_metric"] for c, r in out.items()})
    registry.end_run(parent)
    latest = settings.tune_dir / LATEST
    if latest.exists():
        latest.write_text(json.dumps({**json.loads(latest.read_text()), "finished": True}))
    return {
        "snapshot_id": snap.id,
        "trials": len(grid),
        "failed_trials": failed,
        "classes": out,
        "seconds": round(time.monotonic() - started, 1),
    }


def _tracked(grid: Any) -> dict[str, str]:
    path = Path(str(grid.experiment_path)) / TRACKED
    return json.loads(path.read_text()) if path.exists() else {}


def _best_metric(result: Any, metric: str) -> float:
    """The trial's best validation metric over its epochs."""
    history = result.metrics_dataframe
    if history is None or metric not in history:
        return float("inf")
    return float(history[metric].min())


def _register(
    registry: Registry,
    snap: Snapshot,
    cls: str,
    result: Any,
    ckpt: Any,
    data: tuple[Arrays, Arrays, str],
    tracking: MlflowTracking,
    tags: dict[str, str],
    space: SearchSpace,
) -> dict[str, Any]:
    with ckpt.as_directory() as d:
        state = torch.load(Path(d) / "state.pt", weights_only=True)
        model_cfg = json.loads((Path(d) / "model_config.json").read_text())
    spec = snap.spec(cls)
    model = build_model(spec.n_channels, ModelConfig(**model_cfg))
    model.load_state_dict(state)
    onnx_bytes = to_onnx(model, spec.window, spec.n_channels)
    parity = check_parity(model, onnx_bytes, data[1].x[:1000])
    run_id = tracking.runs[str(result.metrics["trial_id"])]
    val_metric = _best_metric(result, space.metric)
    registry.set_tags(run_id, {"onnx_parity_max_abs": f"{parity:.2e}", **describe(model)})
    registry.log_snapshot_input(run_id, snap, cls)
    _log_plots(registry, run_id, model, data[1], spec)
    uri = registry.log_model(run_id, onnx_bytes, spec, state, model_cfg)
    version = registry.register_as(
        uri,
        model_name(cls),
        CHALLENGER,
        tags={
            **tags,
            "pump_class": cls,
            f"val_{space.metric}": f"{val_metric:.3f}",
            "run_id": run_id,
            "config_hash": config_hash(result.config),
            "onnx_parity_max_abs": f"{parity:.2e}",
        },
    )
    log.info(
        "%s: registered %s v%s (val %s %.2f)",
        cls,
        model_name(cls),
        version,
        space.metric,
        val_metric,
    )
    return {
        "version": version,
        "run_id": run_id,
        "val_metric": val_metric,
        "val_rmse": _best_metric(result, "rmse"),
        "onnx_parity": parity,
        "config": {k: v for k, v in result.config.items() if k != "pump_class"},
    }


RUL_BUCKETS = (0.0, 24.0, 72.0, 120.0)


def _log_plots(
    registry: Registry, run_id: str, model: torch.nn.Module, val: Arrays, spec: FeatureSpec
) -> None:
    """Predicted against true RUL, and the error by RUL bucket, on the validation pumps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rul, _ = decode_outputs(predict(model, val.x), spec)
    true = val.rul
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(true, rul, s=4, alpha=0.3)
    ax.plot([0, spec.rul_cap_hours], [0, spec.rul_cap_hours], color="black", lw=1)
    ax.set(xlabel="true RUL (h)", ylabel="predicted RUL (h)", title=f"{spec.pump_class}: val")
    registry.log_figure(run_id, fig, "plots/predicted_vs_true.png")
    plt.close(fig)

    edges = [e for e in RUL_BUCKETS if e < spec.rul_cap_hours] + [spec.rul_cap_hours]
    labels, rmses = [], []
    for lo, hi in itertools.pairwise(edges):
        sel = (true >= lo) & ((true < hi) if hi < spec.rul_cap_hours else (true <= hi))
        if sel.any():
            labels.append(f"{lo:.0f}-{hi:.0f}")
            rmses.append(float(np.sqrt(np.mean((rul[sel] - true[sel]) ** 2))))
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar(labels, rmses)
    ax.set(xlabel="true RUL bucket (h)", ylabel="RMSE (h)", title="error by RUL bucket")
    registry.log_figure(run_id, fig, "plots/error_by_rul_bucket.png")
    plt.close(fig)


# --- reproduction -------------------------------------------------------------------


def reproduce(settings: Settings, run_id: str) -> dict[str, Any]:
    """Retrain one recorded trial from its snapshot, config and seed (one thread, like a
    trial) and compare its per-epoch validation metrics with the recorded ones."""
    registry = Registry(settings.tracking_uri, settings.artifact_root)
    params, run_tags, history = registry.run_record(run_id, ("rmse", "mae", "phm08"))
    snapshot = run_tags.get("feature_snapshot")
    if not snapshot or "pump_class" not in params:
        raise InputError(f"run {run_id} is not a training trial (no snapshot or class recorded)")
    config = _parse_params(params)
    snap = open_snapshot(str(settings.features_dir), snapshot)
    cls = config["pump_class"]
    data = _load_data(snap)
    if cls not in data:
        raise DataError(f"snapshot {snapshot} has no train and val windows of class {cls}")
    train, val, spec_json = data[cls]
    _, cfg = _train_config(config)
    got: dict[str, dict[int, float]] = {k: {} for k in history}

    def on_epoch(epoch: int, report: dict[str, Any], model: Any, state: Any) -> None:
        for k in got:
            if report.get(k) is not None:
                got[k][epoch] = float(report[k])

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fit(train, val, FeatureSpec.model_validate_json(spec_json), cfg, on_epoch=on_epoch)
    finally:
        torch.set_num_threads(threads)
    diffs = {
        k: max((abs(got[k][e] - v) for e, v in history[k].items() if e in got[k]), default=None)
        for k in history
    }
    recorded_epochs = len(history.get("rmse", {}))
    return {
        "run_id": run_id,
        "pump_class": cls,
        "snapshot_id": snapshot,
        "config_hash": config_hash(config),
        "epochs_compared": recorded_epochs,
        "recorded": {k: v.get(max(v)) if v else None for k, v in history.items()},
        "reproduced": {k: got[k].get(max(history[k])) if history[k] else None for k in history},
        "max_abs_difference": diffs,
        "identical": all(d == 0.0 for d in diffs.values() if d is not None),
    }


def _parse_params(params: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in params.items():
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


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


def space_from_args(args: argparse.Namespace) -> SearchSpace:
    overrides = {k: v for k, v in (("epochs", args.epochs), ("seed", args.seed)) if v is not None}
    if args.config:
        return SearchSpace.from_file(args.config, **overrides)
    try:
        return SearchSpace(**overrides)
    except ValidationError as e:
        raise InputError(one_line(e)) from None


if __name__ == "__main__":
    raise SystemExit(main())
