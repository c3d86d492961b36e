"""What the monitor compares the served fleet with, per class: the champion's reference
(its snapshot's window summaries, and its own predictions on the windows it was validated
on), what drives the champion's flags there (occlusion attributions), and the anomaly
(health) champion's scores on the windows it did not train on. Also the analysis frame:
one class's logged predictions in the shape ``pumpfleet.drift.analyse_class`` reads.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pumpfleet.abreport import _truth
from pumpfleet.drift import (
    ANOMALY,
    HEALTH,
    RUL_PRED,
    RUL_TRUE,
    Y_PRED,
    Y_PROB,
    Y_TRUE,
    HealthReference,
    shuffled_reference,
)
from pumpfleet.errors import PumpfleetError
from pumpfleet.explain import flagged_drivers, rul_scorer
from pumpfleet.features import window_summary
from pumpfleet.health import HealthSpec
from pumpfleet.registry import CHAMPION, LoadedModel, Registry, anomaly_model_name, model_name
from pumpfleet.scoring import score_health, score_rul
from pumpfleet.settings import Settings
from pumpfleet.snapshot import Snapshot, open_snapshot
from pumpfleet.windows import SPLITS

log = logging.getLogger(__name__)

# What the champion was validated on: the pumps it never trained on, and the time after
# its training data. Its own predictions there, with the labels, calibrate CBPE and DLE.
VALIDATED_ON = ("val", "holdout", "future")
EXPLAINED = 200  # flagged windows explained per class, the most at risk first
DRIVERS_BASIS = (
    "occlusion attributions of the champion's failure risk over the reference windows it "
    "flags (risk at or over its alert threshold) among those it was validated on (val, "
    "holdout and future of its snapshot): {explained} of the {flagged} flagged, the most at "
    "risk first; the prediction log keeps only per-window means, so served windows cannot "
    "be occluded"
)


@dataclass
class Reference:
    drift: pd.DataFrame  # window summaries of every window of the snapshot (shuffled)
    perf: pd.DataFrame | None  # + the champion's predictions and the labels (validated on)
    features: list[str]
    snapshot: str
    champion: str | None = None
    threshold: float = 0.5
    horizon_hours: float = 48.0
    notes: list[str] = field(default_factory=list)
    drivers: dict[str, Any] | None = None  # what drives the champion's flags (explain)
    health: HealthReference | None = None  # the anomaly champion's reference scores
    health_snapshot: str | None = None
    # the champion's RUL cap: the true RUL from feedback is capped as its labels were
    rul_cap_hours: float | None = None


def _summaries(
    snap: Snapshot, cls: str, splits: tuple[str, ...], spec: Any = None
) -> tuple[pd.DataFrame, np.ndarray, dict[str, np.ndarray]]:
    parts = [snap.load(cls, s, spec) for s in splits]
    raw = np.concatenate([p[0] for p in parts])
    cols = {k: np.concatenate([p[1][k] for p in parts]) for k in parts[0][1]}
    frame = pd.DataFrame(window_summary(raw, spec or snap.spec(cls)))
    frame["timestamp"] = pd.to_datetime(cols["end_time"], utc=True)
    return shuffled_reference(frame), raw, cols


def _own_snapshot(
    settings: Settings, model: LoadedModel, default: str, notes: list[str]
) -> Snapshot:
    """The snapshot a registered model was trained on, else ``default`` (with a note)."""
    snap_id = model.tags.get("feature_snapshot") or default
    try:
        return open_snapshot(settings.features_uri, snap_id)
    except PumpfleetError:
        notes.append(f"{model.name}: its snapshot {snap_id} is gone; using {default}")
        return open_snapshot(settings.features_uri, default)


def class_reference(settings: Settings, default_snapshot: str, cls: str) -> Reference:
    """The reference from the champion's lineage: its snapshot (else ``default_snapshot``),
    its own predictions on the windows it was validated on, what drives its flags there,
    and the class's anomaly champion's reference scores where it has one."""
    registry = Registry(settings.tracking_uri, settings.artifact_root)
    name = model_name(cls)
    notes: list[str] = []
    if registry.version_by_alias(name, CHAMPION) is None:
        snap = open_snapshot(settings.features_uri, default_snapshot)
        drift, _, _ = _summaries(snap, cls, SPLITS)
        notes.append(f"{cls}: no champion; drift only, against snapshot {snap.id}")
        ref = Reference(drift, None, list(drift.columns.drop("timestamp")), snap.id, notes=notes)
    else:
        with tempfile.TemporaryDirectory(prefix="pumpfleet-monitor-") as tmp:
            model = registry.load(name, CHAMPION, Path(tmp))
        snap = _own_snapshot(settings, model, default_snapshot, notes)
        ref = _champion_reference(model, snap, cls, notes)
    try:
        ref.health, ref.health_snapshot = health_reference(
            settings, registry, default_snapshot, cls
        )
    except (PumpfleetError, KeyError, ValueError) as e:  # ValueError: a spec that is not valid
        ref.notes.append(f"{cls}: its anomaly champion cannot be monitored: {e}")
    return ref


def _champion_reference(
    model: LoadedModel, snap: Snapshot, cls: str, notes: list[str]
) -> Reference:
    spec = model.spec
    drift, _, _ = _summaries(snap, cls, SPLITS, spec)
    perf, raw, cols = _summaries(snap, cls, VALIDATED_ON, spec)
    run = model.runner()
    scored = score_rul(raw, spec, run)
    rul, prob = scored.rul_hours, scored.failure_probability
    order = np.random.default_rng(0).permutation(len(raw))  # as shuffled_reference did
    perf[Y_PROB] = np.asarray(prob, float)[order]
    perf[Y_PRED] = (perf[Y_PROB] >= spec.alert_threshold).astype(int)
    perf[Y_TRUE] = np.asarray(cols["failure_within_horizon"], int)[order]
    perf[RUL_PRED] = np.asarray(rul, float)[order]
    perf[RUL_TRUE] = np.asarray(cols["rul_hours"], float)[order]
    explained = flagged_drivers(
        rul_scorer(run, spec), raw, prob, spec, spec.alert_threshold, EXPLAINED
    )
    drivers = {
        **explained.as_dict(),
        "basis": DRIVERS_BASIS.format(explained=explained.explained, flagged=explained.flagged),
    }
    return Reference(
        drift,
        perf,
        list(drift.columns.drop("timestamp")),
        snap.id,
        model.version,
        spec.alert_threshold,
        spec.horizon_hours,
        notes,
        drivers,
        rul_cap_hours=spec.rul_cap_hours,
    )


def health_reference(
    settings: Settings, registry: Registry, default_snapshot: str, cls: str
) -> tuple[HealthReference | None, str | None]:
    """The anomaly champion's health scores and alarms on the windows it did not train on
    (val, holdout and future of its own snapshot; it was calibrated on the first), and the
    snapshot they came from; (None, None) where the class has no anomaly champion."""
    name = anomaly_model_name(cls)
    if registry.version_by_alias(name, CHAMPION) is None:
        return None, None
    with tempfile.TemporaryDirectory(prefix="pumpfleet-monitor-") as tmp:
        model = registry.load(name, CHAMPION, Path(tmp))
    spec = HealthSpec.model_validate(model.model_config["health"])
    snap = _own_snapshot(settings, model, default_snapshot, [])
    parts = [snap.load(cls, s, model.spec) for s in VALIDATED_ON]
    raw = np.concatenate([p[0] for p in parts])
    ends = np.concatenate([p[1]["end_time"] for p in parts])
    health = score_health(raw, model.health_model())
    scores = pd.DataFrame({HEALTH: health.scores, "timestamp": pd.to_datetime(ends, utc=True)})
    rate = float(health.flags.mean()) if len(raw) else 0.0
    ref = HealthReference(model.version, shuffled_reference(scores), spec.target_far, rate)
    return ref, snap.id


def analysis_frame(rows: pd.DataFrame, feedback: pd.DataFrame, ref: Reference) -> pd.DataFrame:
    """One class's logged predictions as the analysis: inputs, outputs of the champion
    (other versions' outputs are blanked: the estimates are the champion's), the anomaly
    champion's health score and flag where the log has them (other versions' blanked),
    and the true RUL and failure label where feedback has arrived. Sorted by time."""
    a = rows.rename(columns=lambda c: c.removeprefix("in_")).reset_index(drop=True)
    a["timestamp"] = pd.to_datetime(a["timestamp"], utc=True).dt.as_unit("ns")
    versions = a["model_version"] if "model_version" in a else pd.Series(None, index=a.index)
    champ = versions.astype(str) == str(ref.champion)
    nothing = pd.Series(np.nan, index=a.index)
    prob = pd.to_numeric(a.get("failure_probability", nothing), errors="coerce")
    rul = pd.to_numeric(a.get("rul_hours", nothing), errors="coerce")
    a[Y_PROB] = prob.where(champ)
    a[RUL_PRED] = rul.where(champ)
    a[Y_PRED] = (a[Y_PROB] >= ref.threshold).astype(int)
    if HEALTH in a:
        _health_columns(a, ref.health)
    fb = feedback.copy()
    for col in ("observed_at", "failed_at"):  # one time unit, whatever each writer used
        if col in fb:
            fb[col] = pd.to_datetime(fb[col], utc=True).dt.as_unit("ns")
    truth = _truth(a, fb) if not fb.empty else pd.Series(np.nan, index=a.index)
    if ref.rul_cap_hours is not None:  # compared with capped predictions: cap it too
        truth = truth.clip(upper=ref.rul_cap_hours)
    a[RUL_TRUE] = truth.to_numpy(float)
    failed = (a[RUL_TRUE] <= ref.horizon_hours).astype(float)
    a[Y_TRUE] = failed.where(a[RUL_TRUE].notna())
    return a.sort_values("timestamp", kind="stable").reset_index(drop=True)


def _health_columns(a: pd.DataFrame, health: HealthReference | None) -> None:
    """``health_score`` and ``anomaly`` (0/1) as numbers, kept only on the rows the
    anomaly champion scored: an older version's scores are not comparable with its
    reference."""
    version = a["anomaly_version"] if "anomaly_version" in a else pd.Series(None, index=a.index)
    mine = version.astype(str) == str(health.version if health else None)
    mine &= health is not None
    score = pd.to_numeric(a[HEALTH], errors="coerce")
    if ANOMALY in a:
        flag = pd.to_numeric(a[ANOMALY].map({True: 1.0, False: 0.0}), errors="coerce")
    else:
        flag = (score > 1).astype(float)
    a[HEALTH] = score.where(mine & score.notna())
    a[ANOMALY] = flag.where(mine & score.notna())
