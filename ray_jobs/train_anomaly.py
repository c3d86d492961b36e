"""Anomaly (health) models on Ray Tune: one conv-AE search per pump class on windows of
normal operation, every trial tracked in MLflow, each class's best calibrated, gated on
labelled faults and registered as ``pumpfleet-<class>-anomaly`` with alias ``challenger``.

    python -m ray_jobs.train_anomaly [--snapshot ID] [--classes esp rod] [--epochs N] [--promote]

Normal operation: windows whose RUL label is at the cap, i.e. no failure within
``rul_cap_hours`` after the window (pumps that never fail are normal throughout). The
model trains on the training pumps' normal windows; its threshold is calibrated on the
validation pumps' normal windows (held-out pumps: a false-alarm rate measured on pumps
the model has not seen); the gate compares its flags on the validation pumps' labelled
windows (failure within the horizon = fault, normal = not) with :class:`AnomalyGate`.
The PCA T²+Q baseline is fitted on the same windows and its figures logged beside.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from ray import tune

from pumpfleet import lifecycle
from pumpfleet.anomaly import (
    AnomalyConfig,
    build_autoencoder,
    fit_autoencoder,
    fit_pca,
    model_bytes,
    window_errors,
)
from pumpfleet.entry import run_main
from pumpfleet.errors import DataError, InputError
from pumpfleet.features import window_features
from pumpfleet.health import (
    HEALTH_FILE,
    AnomalyGate,
    calibrate,
    detection_report,
    gate_anomaly,
)
from pumpfleet.lifecycle import current_user, utc_now
from pumpfleet.lineage import code_tags
from pumpfleet.models import MAX_BYTES
from pumpfleet.onnx_io import check_parity, to_onnx
from pumpfleet.registry import CHALLENGER, CHAMPION, Registry, anomaly_model_name
from pumpfleet.scoring import score_health
from pumpfleet.settings import Settings, get_settings
from pumpfleet.snapshot import Snapshot, open_snapshot
from ray_jobs._ray import cluster_cpus, init_ray
from ray_jobs.train import EXPERIMENT, MlflowTracking, config_hash

log = logging.getLogger(__name__)

MODEL_KIND = "anomaly"


class AnomalySearchSpace(BaseModel):
    """The conv-AE search per class (a grid over every list) and how its winner is
    calibrated and gated."""

    model_config = ConfigDict(extra="forbid")
    lr: list[Annotated[float, Field(gt=0, lt=1)]] = Field(default=[3e-3, 1e-2], min_length=1)
    hidden: list[Annotated[int, Field(ge=2, le=256)]] = Field(default=[16], min_length=1)
    latent: list[Annotated[int, Field(ge=1, le=128)]] = Field(default=[4], min_length=1)
    epochs: int = Field(default=5, ge=1)
    batch_size: int = Field(default=64, ge=1)
    seed: int = 0
    target_far: float = Field(default=0.01, gt=0, lt=1)
    margin: float = Field(default=1.0, gt=0)
    gate: AnomalyGate = Field(default_factory=AnomalyGate)

    def param_space(self, classes: list[str]) -> dict[str, Any]:
        grid: dict[str, list[Any]] = {
            "pump_class": classes,
            "lr": self.lr,
            "hidden": self.hidden,
            "latent": self.latent,
        }
        space: dict[str, Any] = {k: tune.grid_search(v) for k, v in grid.items()}
        return {**space, "epochs": self.epochs, "batch_size": self.batch_size, "seed": self.seed}


def normal_mask(rul_hours: np.ndarray, rul_cap_hours: float) -> np.ndarray:
    """Windows of normal operation: no failure within the RUL cap after them."""
    return np.asarray(rul_hours, dtype=np.float64) >= rul_cap_hours * (1 - 1e-6)


def class_data(snap: Snapshot, cls: str) -> dict[str, np.ndarray]:
    """Standardised windows of one class: training normal, validation normal, and the
    validation windows labelled for the gate (normal or failing within the horizon)."""
    spec = snap.spec(cls)
    out: dict[str, np.ndarray] = {}
    for split in ("train", "val"):
        raw, cols = snap.load(cls, split)
        x = window_features(raw, spec)
        normal = normal_mask(cols["rul_hours"], spec.rul_cap_hours)
        out[f"{split}_normal"] = x[normal]
        if split == "val":
            fault = cols["failure_within_horizon"].astype(bool)
            labelled = normal | fault
            out["val_labelled"], out["val_fault"] = x[labelled], fault[labelled]
            # Raw too: a champion standardised on another snapshot scores these its way.
            out["val_labelled_raw"] = np.asarray(raw)[labelled]
    return out


def _config(config: dict[str, Any]) -> AnomalyConfig:
    keys = set(AnomalyConfig.model_fields)
    return AnomalyConfig(**{k: v for k, v in config.items() if k in keys})


def _trial(config: dict[str, Any], data: dict[str, Any]) -> None:
    torch.set_num_threads(1)  # one thread per trial: threads fight on shared cores
    d = data[config["pump_class"]]
    cfg = _config(config)

    def on_epoch(epoch: int, report: dict[str, float], model: torch.nn.Module) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            torch.save(model.state_dict(), Path(tmp) / "state.pt")
            (Path(tmp) / "anomaly_config.json").write_text(cfg.model_dump_json())
            tune.report({**report, "epoch": epoch}, checkpoint=tune.Checkpoint.from_directory(tmp))

    fit_autoencoder(d["train_normal"], d["val_normal"], cfg, on_epoch=on_epoch)


class AnomalyTracking(MlflowTracking):
    """:class:`MlflowTracking` with the autoencoder's metrics."""

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        metrics: dict[str, Any] = {k: result[k] for k in ("train_loss", "val_loss") if k in result}
        self.registry.log_metrics(self._run(trial), metrics, step=int(result["epoch"]))


def load_data(snap: Snapshot, classes: list[str] | None) -> dict[str, dict[str, np.ndarray]]:
    names = classes or snap.classes
    unknown = sorted(set(names) - set(snap.classes))
    if unknown:
        raise InputError(f"snapshot {snap.id} has no class {unknown[0]!r}")
    data = {}
    for cls in names:
        d = class_data(snap, cls)
        if len(d["train_normal"]) == 0 or len(d["val_normal"]) < 20:
            log.warning(
                "class %s skipped: %d train / %d val normal windows",
                cls,
                len(d["train_normal"]),
                len(d["val_normal"]),
            )
            continue
        data[cls] = d
    if not data:
        raise DataError(f"snapshot {snap.id}: no class has enough windows of normal operation")
    return data


def run_train_anomaly(
    settings: Settings,
    snapshot: str = "latest",
    space: AnomalySearchSpace | None = None,
    classes: list[str] | None = None,
    promote: bool = False,
) -> dict[str, Any]:
    """Tune a conv-AE per class; calibrate, gate and register each class's best; with
    ``promote``, make it champion where :func:`promote_anomaly` says it is no worse."""
    started = time.monotonic()
    space = space or AnomalySearchSpace()
    snap = open_snapshot(str(settings.features_dir), snapshot)
    data = load_data(snap, classes)
    names = sorted(data)
    registry = Registry(settings.tracking_uri, settings.artifact_root)
    registry.ping()
    tags = {**code_tags(), "feature_snapshot": snap.id, "model_kind": MODEL_KIND}
    parent = registry.start_run(
        EXPERIMENT,
        f"train-anomaly-{snap.id}",
        params={**space.model_dump(), "classes": names},
        tags={**tags, "config_hash": config_hash(space.model_dump())},
    )
    name = f"train-anomaly-{snap.id}-{int(time.time())}"
    tracking = AnomalyTracking(settings, parent, tags, settings.tune_dir / name)
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(_trial, data=data), {"cpu": 1}),
        param_space=space.param_space(names),
        tune_config=tune.TuneConfig(
            metric="val_loss", mode="min", max_concurrent_trials=cluster_cpus(), reuse_actors=False
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
        best = min(ok, key=_best_val_loss)
        out[cls] = _register(registry, snap, cls, best, data[cls], tracking, tags, space)
        if promote and out[cls]["registered"]:
            out[cls] |= promote_anomaly(registry, cls, out[cls]["version"], data[cls])
    registry.end_run(parent)
    return {
        "snapshot_id": snap.id,
        "trials": len(grid),
        "classes": out,
        "seconds": round(time.monotonic() - started, 1),
    }


def _best_val_loss(result: Any) -> float:
    history = result.metrics_dataframe
    return float(history["val_loss"].min()) if history is not None else float("inf")


def _register(
    registry: Registry,
    snap: Snapshot,
    cls: str,
    result: Any,
    d: dict[str, np.ndarray],
    tracking: MlflowTracking,
    tags: dict[str, str],
    space: AnomalySearchSpace,
) -> dict[str, Any]:
    ckpt = result.get_best_checkpoint("val_loss", "min")
    with ckpt.as_directory() as tmp:
        state = torch.load(Path(tmp) / "state.pt", weights_only=True)
        cfg = AnomalyConfig.model_validate_json((Path(tmp) / "anomaly_config.json").read_text())
    spec = snap.spec(cls)
    model = build_autoencoder(spec.n_channels, cfg)
    model.load_state_dict(state)
    model.eval()
    onnx_bytes = to_onnx(model, spec.window, spec.n_channels)
    parity = check_parity(model, onnx_bytes, d["val_normal"][:1000])
    health = calibrate(
        window_errors(model, d["val_normal"]), "conv_ae", space.target_far, space.margin
    )
    has_faults = bool(d["val_fault"].any())
    report = (
        detection_report(health.flag(window_errors(model, d["val_labelled"])), d["val_fault"])
        if has_faults
        else None
    )
    passed, why = gate_anomaly(report, space.gate)
    baseline = _pca_baseline(d, space)
    run_id = tracking.runs[str(result.metrics["trial_id"])]
    size = model_bytes(model)
    registry.set_tags(run_id, {"onnx_parity_max_abs": f"{parity:.2e}", "bytes": size})
    registry.log_metrics(
        run_id,
        {
            "health_threshold": health.threshold,
            "calibration_far": health.calibration_far,
            **{f"val_{k}": v for k, v in (report or {}).items()},
            **{f"pca_val_{k}": v for k, v in (baseline or {}).items()},
        },
    )
    registry.log_dict(run_id, health.model_dump(), HEALTH_FILE)
    summary: dict[str, Any] = {
        "run_id": run_id,
        "val_loss": _best_val_loss(result),
        "threshold": health.threshold,
        "gate": why,
        "detection": report,
        "pca_detection": baseline,
        "onnx_parity": parity,
        "bytes": size,
    }
    if size > MAX_BYTES:
        passed, why = False, f"model is {size} bytes, over {MAX_BYTES}"
    if not passed:
        log.warning("%s: anomaly model not registered: %s", cls, why)
        return {**summary, "registered": False, "gate": why}
    registry.log_snapshot_input(run_id, snap, cls)
    model_config = {
        "kind": MODEL_KIND,
        "model_kind": "conv_ae",
        "anomaly_config": cfg.model_dump(),
        "health": health.model_dump(),
    }
    uri = registry.log_model(run_id, onnx_bytes, spec, state, model_config)
    version = registry.register_as(
        uri,
        anomaly_model_name(cls),
        CHALLENGER,
        tags={
            **tags,
            "pump_class": cls,
            "run_id": run_id,
            "config_hash": config_hash(result.config),
            "val_loss": f"{summary['val_loss']:.5f}",
            "health_threshold": f"{health.threshold:.6g}",
            "target_far": str(health.target_far),
            "gate": why,
            "onnx_parity_max_abs": f"{parity:.2e}",
        },
    )
    log.info("%s: registered %s v%s (%s)", cls, anomaly_model_name(cls), version, why)
    return {**summary, "registered": True, "version": version}


Detection = dict[str, float | None]


def champion_detection(
    registry: Registry, cls: str, d: dict[str, np.ndarray]
) -> tuple[str, Detection | None] | None:
    """The anomaly champion (version) and its flags' detection figures on ``d``'s
    labelled windows, each model with its own features and threshold; None without a
    champion, figures None where the champion cannot read these windows."""
    name = anomaly_model_name(cls)
    version = registry.version_by_alias(name, CHAMPION)
    if version is None:
        return None
    old = registry.load_version(name, version)
    raw = d["val_labelled_raw"]
    if raw.ndim != 3 or raw.shape[1:] != (old.spec.window, len(old.spec.inputs)):
        return version, None
    flags = score_health(raw, old.health_model()).flags
    return version, detection_report(flags, d["val_fault"])


def anomaly_verdict(
    new: Detection | None, champion: tuple[str, Detection | None] | None
) -> tuple[bool, str]:
    """Whether a gated anomaly model replaces the champion (version, detection figures
    on the same windows; None: no champion), and why. No worse: F1 no lower and the
    false-alarm rate no more than one point higher."""
    if champion is None:
        return True, "first anomaly model of the class (it passed its gate)"
    version, old = champion
    if old is None:
        return True, f"champion v{version} cannot read this snapshot's windows"
    if new is None or not new.get("positives"):
        return False, f"no labelled faults to compare with champion v{version}"
    f1, far = new["f1"] or 0.0, new["far"] or 0.0
    old_f1, old_far = old["f1"] or 0.0, old["far"] or 0.0
    why = (
        f"F1 {f1:.3f} vs champion v{version} {old_f1:.3f}, "
        f"false alarms {far:.1f}% vs {old_far:.1f}%"
    )
    return f1 >= old_f1 and far <= old_far + 1.0, why


def promote_anomaly(
    registry: Registry, cls: str, version: str, d: dict[str, np.ndarray]
) -> dict[str, Any]:
    """Make a registered (gated) anomaly model champion if the class has none, or if on
    the same labelled validation windows its F1 is no lower than the champion's and its
    false-alarm rate no more than one point higher; otherwise record the rejection."""
    who, now = current_user(), utc_now()
    found = champion_detection(registry, cls, d)
    new = (
        detection_report(_flags(registry, cls, version, d), d["val_fault"])
        if d["val_fault"].any()
        else None
    )
    promoted, why = anomaly_verdict(new, found)
    if promoted:
        lifecycle.promote(
            registry, cls, version, who=who, why=why, now=now, source="train", kind="anomaly"
        )
    else:
        lifecycle.record_rejection(
            registry, cls, version, who=who, why=why, now=now, kind="anomaly"
        )
    log.info("%s anomaly v%s %s: %s", cls, version, "promoted" if promoted else "kept out", why)
    return {"promoted": promoted, "promotion": why}


def _flags(registry: Registry, cls: str, version: str, d: dict[str, np.ndarray]) -> np.ndarray:
    """A registered version's flags on ``d``'s labelled windows (from its ONNX, as served)."""
    m = registry.load_version(anomaly_model_name(cls), version)
    return score_health(d["val_labelled_raw"], m.health_model()).flags


def _pca_baseline(
    d: dict[str, np.ndarray], space: AnomalySearchSpace
) -> dict[str, float | None] | None:
    """The T²+Q baseline's detection figures on the same windows (None: no faults)."""
    if not d["val_fault"].any() or len(d["train_normal"]) < 3:
        return None
    pca = fit_pca(d["train_normal"])
    health = calibrate(pca.errors(d["val_normal"]), "pca", space.target_far, space.margin)
    return detection_report(health.flag(pca.errors(d["val_labelled"])), d["val_fault"])


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
    raise SystemExit(main())
