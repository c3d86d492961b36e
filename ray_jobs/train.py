"""Training on Ray Tune: one model per pump class, the classes' trials in parallel,
every trial tracked in MLflow; the best per class is registered as ``challenger``.

    python -m ray_jobs.train [--snapshot ID] [--epochs N]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
from pydantic import BaseModel, Field
from ray import tune

from pumpfleet.errors import DataError
from pumpfleet.features import FeatureSpec, window_features
from pumpfleet.lineage import code_tags
from pumpfleet.models import ModelConfig, build_model, describe
from pumpfleet.onnx_io import check_parity, to_onnx
from pumpfleet.registry import CHALLENGER, Registry, model_name
from pumpfleet.settings import Settings, get_settings
from pumpfleet.snapshot import Snapshot, open_snapshot
from pumpfleet.training import Arrays, TrainConfig, fit
from ray_jobs._ray import cluster_cpus, init_ray
from ray_jobs.cli import run_main

log = logging.getLogger(__name__)

EXPERIMENT = "pumpfleet-train"
METRIC = "rmse"
MODEL_KEYS = set(ModelConfig.model_fields)


class SearchSpace(BaseModel):
    """Grid searched for every class (as data, so a config file can change it)."""

    lr: list[Annotated[float, Field(gt=0, lt=1)]] = Field(default=[3e-3, 1e-2], min_length=1)
    hidden: list[Annotated[int, Field(ge=4, le=512)]] = Field(default=[32], min_length=1)
    epochs: int = Field(default=8, ge=1)
    seed: int = 0


def _arrays(snap: Snapshot, cls: str, split: str) -> Arrays:
    spec = snap.spec(cls)
    raw, cols = snap.load(cls, split)
    return Arrays(
        x=window_features(raw, spec),
        rul=cols["rul_hours"].astype(np.float32),
        failure=cols["failure_within_horizon"].astype(np.int8),
    )


def _trial(config: dict[str, Any], data: dict[str, Any]) -> None:
    """One Tune trial: train on one class, report and checkpoint every epoch."""
    torch.set_num_threads(1)  # one thread per trial: threads fight on shared cores
    train, val, spec_json = data[config["pump_class"]]
    spec = FeatureSpec.model_validate_json(spec_json)
    model_cfg = ModelConfig(**{k: v for k, v in config.items() if k in MODEL_KEYS})
    cfg = TrainConfig(
        model=model_cfg, lr=config["lr"], epochs=config["epochs"], seed=config["seed"]
    )

    def on_epoch(epoch: int, report: dict[str, float | None], model: torch.nn.Module) -> None:
        with tempfile.TemporaryDirectory() as d:
            torch.save(model.state_dict(), Path(d) / "state.pt")
            (Path(d) / "model_config.json").write_text(model_cfg.model_dump_json())
            metrics = {k: v for k, v in report.items() if v is not None}
            tune.report({**metrics, "epoch": epoch}, checkpoint=tune.Checkpoint.from_directory(d))

    fit(train, val, spec, cfg, on_epoch=on_epoch)


class MlflowTracking(tune.Callback):
    """Tracks every trial as an MLflow run, from the driver (one writer for SQLite)."""

    def __init__(self, registry: Registry, parent_run_id: str, tags: dict[str, str]) -> None:
        self.registry = registry
        self.parent = parent_run_id
        self.tags = tags
        self.runs: dict[str, str] = {}

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        cfg = trial.config
        self.runs[trial.trial_id] = self.registry.start_run(
            EXPERIMENT,
            f"{cfg['pump_class']}-{trial.trial_id}",
            params=cfg,
            tags={**self.tags, "pump_class": cfg["pump_class"], "tune.trial_id": trial.trial_id},
            parent_run_id=self.parent,
        )

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        keys = ("rmse", "mae", "phm08", "auc", "train_loss")
        metrics: dict[str, Any] = {k: result[k] for k in keys if k in result}
        self.registry.log_metrics(self.runs[trial.trial_id], metrics, step=int(result["epoch"]))

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.registry.end_run(self.runs[trial.trial_id], "FINISHED")

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.registry.end_run(self.runs[trial.trial_id], "FAILED")


def run_train(
    settings: Settings, snapshot: str = "latest", space: SearchSpace | None = None
) -> dict[str, Any]:
    """Tune every class of a snapshot; register each class's best as challenger."""
    started = time.monotonic()
    space = space or SearchSpace()
    snap = open_snapshot(str(settings.features_dir), snapshot)
    data: dict[str, Any] = {}
    for cls in snap.classes:
        train, val = _arrays(snap, cls, "train"), _arrays(snap, cls, "val")
        if len(train) == 0 or len(val) == 0:
            log.warning("class %s skipped: %d train / %d val windows", cls, len(train), len(val))
            continue
        data[cls] = (train, val, snap.spec(cls).model_dump_json())
    if not data:
        raise DataError(f"snapshot {snap.id} has no class with both train and val windows")
    classes = sorted(data)

    registry = Registry(settings.tracking_uri, settings.artifact_root)
    tags = {**code_tags(), "feature_snapshot": snap.id}
    parent = registry.start_run(
        EXPERIMENT, f"train-{snap.id}", params={**space.model_dump(), "classes": classes}, tags=tags
    )
    tracking = MlflowTracking(registry, parent, tags)
    param_space = {
        "pump_class": tune.grid_search(classes),
        "lr": tune.grid_search(space.lr),
        "hidden": tune.grid_search(space.hidden),
        "epochs": space.epochs,
        "seed": space.seed,
    }
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(_trial, data=data), {"cpu": 1}),
        param_space=param_space,
        tune_config=tune.TuneConfig(max_concurrent_trials=cluster_cpus()),
        run_config=tune.RunConfig(
            name=f"train-{snap.id}-{int(time.time())}",
            storage_path=str(settings.tune_dir),
            callbacks=[tracking],
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=1, checkpoint_score_attribute=METRIC, checkpoint_score_order="min"
            ),
            verbose=1,
        ),
    )
    grid = tuner.fit()
    trials = [grid[i] for i in range(len(grid))]
    out: dict[str, Any] = {}
    for cls in classes:
        results = [
            r for r in trials if (r.config or {}).get("pump_class") == cls and r.error is None
        ]
        scored = [(r, r.get_best_checkpoint(METRIC, "min")) for r in results]
        scored = [(r, c) for r, c in scored if c is not None]
        if not scored:
            log.error("class %s: every trial failed", cls)
            continue
        best, ckpt = min(scored, key=lambda rc: _best_metric(rc[0]))
        out[cls] = _register(registry, snap, cls, best, ckpt, data[cls], tracking, tags)
    registry.log_metrics(parent, {f"{c}.{METRIC}": r["val_rmse"] for c, r in out.items()})
    registry.end_run(parent)
    return {
        "snapshot_id": snap.id,
        "trials": len(grid),
        "classes": out,
        "seconds": round(time.monotonic() - started, 1),
    }


def _best_metric(result: Any) -> float:
    """The trial's best validation metric over its epochs."""
    history = result.metrics_dataframe
    return float(history[METRIC].min()) if history is not None else float("inf")


def _register(
    registry: Registry,
    snap: Snapshot,
    cls: str,
    result: Any,
    ckpt: Any,
    data: tuple[Arrays, Arrays, str],
    tracking: MlflowTracking,
    tags: dict[str, str],
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
    val_rmse = _best_metric(result)
    registry.set_tags(run_id, {"onnx_parity_max_abs": f"{parity:.2e}", **describe(model)})
    uri = registry.log_model(run_id, onnx_bytes, spec, state, model_cfg)
    version = registry.register(
        uri,
        model_name(cls),
        tags={**tags, "pump_class": cls, "val_rmse": f"{val_rmse:.3f}", "run_id": run_id},
    )
    registry.set_alias(model_name(cls), CHALLENGER, version)
    log.info("%s: registered %s v%s (val RMSE %.2f h)", cls, model_name(cls), version, val_rmse)
    return {"version": version, "run_id": run_id, "val_rmse": val_rmse, "onnx_parity": parity}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ray_jobs.train", description=__doc__)
    parser.add_argument("--snapshot", default="latest")
    parser.add_argument("--epochs", type=int, default=SearchSpace().epochs)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    def job() -> dict[str, Any]:
        settings = get_settings()
        init_ray(settings)
        return run_train(settings, args.snapshot, SearchSpace(epochs=args.epochs, seed=args.seed))

    return run_main(job)


if __name__ == "__main__":
    raise SystemExit(main())
