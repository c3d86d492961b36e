"""Anomaly (health) models on Ray Tune: one conv-AE search per pump class on windows of
normal operation, every trial tracked in MLflow, each class's best calibrated, gated on
labelled faults and registered as ``pumpfleet-<class>-anomaly`` with alias ``challenger``.
What the search trains on, and how its winner is calibrated, gated, registered and
promoted, is ``pumpfleet.anomaly_training``.

    python -m ray_jobs.train_anomaly [--snapshot ID] [--classes esp rod] [--epochs N] [--promote]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from pumpfleet.anomaly import fit_autoencoder
from pumpfleet.anomaly_training import (
    MODEL_KIND,
    AnomalyWinner,
    load_checkpoint,
    load_data,
    promote_anomaly,
    register_anomaly,
)
from pumpfleet.entry import exiting, run_main
from pumpfleet.registry import Registry
from pumpfleet.search_space import AnomalySearchSpace, anomaly_config, config_hash
from pumpfleet.settings import Settings, get_settings
from pumpfleet.snapshot import open_snapshot
from pumpfleet.training_run import EXPERIMENT, best_metric, lineage_tags
from ray_jobs._ray import cluster_cpus, init_ray
from ray_jobs.train import MlflowTracking

log = logging.getLogger(__name__)

ANOMALY_METRICS = ("train_loss", "val_loss")  # logged per epoch


# Named apart from ray_jobs.train's ``_trial``: Tune registers a trainable under its
# function's name, so two searches at once (the demo's) would otherwise run one function.
def _anomaly_trial(config: dict[str, Any], data: dict[str, Any]) -> None:
    torch.set_num_threads(1)  # one thread per trial: threads fight on shared cores
    d = data[config["pump_class"]]
    cfg = anomaly_config(config)

    def on_epoch(epoch: int, report: dict[str, float], model: torch.nn.Module) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            torch.save(model.state_dict(), Path(tmp) / "state.pt")
            (Path(tmp) / "anomaly_config.json").write_text(cfg.model_dump_json())
            tune.report({**report, "epoch": epoch}, checkpoint=tune.Checkpoint.from_directory(tmp))

    fit_autoencoder(d["train_normal"], d["val_normal"], cfg, on_epoch=on_epoch)


def run_train_anomaly(
    settings: Settings,
    snapshot: str = "latest",
    space: AnomalySearchSpace | None = None,
    classes: list[str] | None = None,
    promote: bool = False,
    concurrent_trials: int | None = None,
) -> dict[str, Any]:
    """Tune a conv-AE per class; calibrate, gate and register each class's best; with
    ``promote``, make it champion where ``promote_anomaly`` says it is no worse. At most
    ``concurrent_trials`` trials at once (None: one per CPU of the cluster)."""
    started = time.monotonic()
    space = space or AnomalySearchSpace()
    snap = open_snapshot(settings.features_uri, snapshot)
    data = load_data(snap, classes)
    names = sorted(data)
    registry = Registry(settings.tracking_uri, settings.artifact_root)
    registry.ping()
    tags = lineage_tags(snap, model_kind=MODEL_KIND)
    parent = registry.start_run(
        EXPERIMENT,
        f"train-anomaly-{snap.id}",
        params={**space.model_dump(), "classes": names},
        tags={**tags, "config_hash": config_hash(space.model_dump())},
    )
    name = f"train-anomaly-{snap.id}-{int(time.time())}"
    tracking = MlflowTracking(settings, parent, tags, settings.tune_dir / name, ANOMALY_METRICS)
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(_anomaly_trial, data=data), {"cpu": 1}),
        param_space=space.param_space(names),
        # A trial's process goes on to the next trial (as ray_jobs.train's do): a new one
        # per trial would import torch and fetch the data again.
        tune_config=tune.TuneConfig(
            metric="val_loss",
            mode="min",
            max_concurrent_trials=concurrent_trials or cluster_cpus(),
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=str(settings.tune_dir),
            callbacks=[tracking],
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=1, checkpoint_score_attribute="val_loss", checkpoint_score_order="min"
            ),
            verbose=1,
        ),
    )
    grid = tuner.fit()
    out: dict[str, Any] = {}
    for cls in names:
        results = [grid[i] for i in range(len(grid))]
        ok = [r for r in results if (r.config or {}).get("pump_class") == cls and r.error is None]
        ok = [r for r in ok if r.get_best_checkpoint("val_loss", "min") is not None]
        if not ok:
            log.error("class %s: every anomaly trial failed", cls)
            continue
        best = min(ok, key=lambda r: best_metric(r.metrics_dataframe, "val_loss"))
        winner = _winner(best, tracking)
        out[cls] = register_anomaly(registry, snap, cls, winner, data[cls], tags, space)
        if promote and out[cls]["registered"]:
            out[cls] |= promote_anomaly(registry, cls, out[cls]["version"], data[cls])
    registry.end_run(parent)
    return {
        "snapshot_id": snap.id,
        "trials": len(grid),
        "classes": out,
        "seconds": round(time.monotonic() - started, 1),
    }


@ray.remote(num_cpus=0)  # its trials ask for the CPUs
class _SearchDriver:
    def run(
        self,
        settings: Settings,
        snapshot: str,
        space: AnomalySearchSpace | None,
        classes: list[str] | None,
        promote: bool,
    ) -> dict[str, Any]:
        # One trial at a time, on one CPU: the other search keeps the rest. (A trial's
        # process goes on to the next, so a search that took every CPU first would keep
        # them until its last trial, and the other would wait rather than run beside.)
        return run_train_anomaly(settings, snapshot, space, classes, promote, concurrent_trials=1)


class BesideSearch:
    """:func:`run_train_anomaly`, run beside another search of this driver in a process of
    its own (a Ray actor) so that the two searches' trials share the CPUs. Tune keeps its
    registry of trainables per process and is not safe for two searches started at once
    from one (in CI: "dictionary changed size during iteration"); each process is its own
    Tune driver here. The search's own log stays in its worker's log file; its result (or
    its error) is :meth:`result`'s."""

    def __init__(
        self,
        settings: Settings,
        snapshot: str,
        space: AnomalySearchSpace | None = None,
        classes: list[str] | None = None,
        promote: bool = False,
    ) -> None:
        self._driver = _SearchDriver.remote()  # type: ignore[attr-defined]
        self._ref = self._driver.run.remote(settings, snapshot, space, classes, promote)

    def result(self) -> dict[str, Any]:
        try:
            return dict(ray.get(self._ref))
        finally:
            # Killed, not left to exit: an exiting Tune driver's atexit hook unregisters
            # every trainable of the Ray job, those of a search still to come included.
            ray.kill(self._driver)


def _winner(result: Any, tracking: MlflowTracking) -> AnomalyWinner:
    """A class's best trial, read from its best checkpoint."""
    with result.get_best_checkpoint("val_loss", "min").as_directory() as tmp:
        state, cfg = load_checkpoint(Path(tmp))
    return AnomalyWinner(
        state=state,
        cfg=cfg,
        config=result.config,
        run_id=tracking.runs[str(result.metrics["trial_id"])],
        val_loss=best_metric(result.metrics_dataframe, "val_loss"),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ray_jobs.train_anomaly", description=__doc__)
    parser.add_argument("--snapshot", default="latest")
    parser.add_argument("--classes", nargs="+", default=None, help="only these classes")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--target-far", type=float, default=None)
    parser.add_argument(
        "--promote", action="store_true", help="make each class's model champion if no worse"
    )
    args = parser.parse_args(argv)

    def job() -> dict[str, Any]:
        overrides = {
            k: v for k, v in (("epochs", args.epochs), ("target_far", args.target_far)) if v
        }
        space = AnomalySearchSpace(**overrides)
        settings = get_settings()
        init_ray(settings)
        return run_train_anomaly(settings, args.snapshot, space, args.classes, args.promote)

    return run_main(job)


if __name__ == "__main__":
    raise SystemExit(exiting(main()))
