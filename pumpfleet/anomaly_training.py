"""Anomaly (health) models between the Tune search and the registry: the windows of
normal operation they train and calibrate on, and the labelled ones they are gated on;
each class's winner calibrated, gated and registered as ``pumpfleet-<class>-anomaly``
(alias ``challenger``) beside the PCA T²+Q baseline's figures; and its promotion when it
is no worse than the champion. ``ray_jobs.train_anomaly`` runs the search.

Normal operation: windows whose RUL label is at the cap, i.e. no failure within
``rul_cap_hours`` after the window (pumps that never fail are normal throughout). The
model trains on the training pumps' normal windows; its threshold is calibrated on the
validation pumps' normal windows (held-out pumps: a false-alarm rate measured on pumps
the model has not seen); the gate compares its flags on the validation pumps' labelled
windows (failure within the horizon = fault, normal = not) with :class:`AnomalyGate`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pumpfleet import lifecycle
from pumpfleet.anomaly import (
    AnomalyConfig,
    build_autoencoder,
    fit_pca,
    model_bytes,
    window_errors,
)
from pumpfleet.errors import DataError, InputError
from pumpfleet.features import window_features
from pumpfleet.health import HEALTH_FILE, calibrate, detection_report, gate_anomaly
from pumpfleet.lifecycle import current_user, utc_now
from pumpfleet.models import MAX_BYTES
from pumpfleet.onnx_io import check_parity, to_onnx
from pumpfleet.registry import CHALLENGER, CHAMPION, Registry, anomaly_model_name
from pumpfleet.scoring import score_health
from pumpfleet.search_space import AnomalySearchSpace, config_hash
from pumpfleet.snapshot import Snapshot

log = logging.getLogger(__name__)

MODEL_KIND = "anomaly"


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


def load_checkpoint(folder: Path) -> tuple[dict[str, Any], AnomalyConfig]:
    """The weights and config an anomaly trial checkpoints."""
    state = torch.load(folder / "state.pt", weights_only=True)
    return state, AnomalyConfig.model_validate_json((folder / "anomaly_config.json").read_text())


@dataclass(frozen=True)
class AnomalyWinner:
    """A class's best anomaly trial: weights and config (from its checkpoint), its trial
    config, MLflow run and best validation loss."""

    state: dict[str, Any]
    cfg: AnomalyConfig
    config: dict[str, Any]
    run_id: str
    val_loss: float


def register_anomaly(
    registry: Registry,
    snap: Snapshot,
    cls: str,
    winner: AnomalyWinner,
    d: dict[str, np.ndarray],
    tags: dict[str, str],
    space: AnomalySearchSpace,
) -> dict[str, Any]:
    """Calibrate ``winner``'s threshold, gate it on labelled faults, and register it as
    the class's anomaly challenger if it passes; returns its entry in the summary."""
    state, cfg = winner.state, winner.cfg
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
    baseline = pca_baseline(d, space)
    run_id = winner.run_id
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
        "val_loss": winner.val_loss,
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
            "config_hash": config_hash(winner.config),
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


def pca_baseline(
    d: dict[str, np.ndarray], space: AnomalySearchSpace
) -> dict[str, float | None] | None:
    """The T²+Q baseline's detection figures on the same windows (None: no faults)."""
    if not d["val_fault"].any() or len(d["train_normal"]) < 3:
        return None
    pca = fit_pca(d["train_normal"])
    health = calibrate(pca.errors(d["val_normal"]), "pca", space.target_far, space.margin)
    return detection_report(health.flag(pca.errors(d["val_labelled"])), d["val_fault"])
