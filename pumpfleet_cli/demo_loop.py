"""The demo's closed loop after the monitor alerts: new data arrives with the drift in it
→ retrain the alerting class → A/B of challenger and champion on post-drift data →
promotion by the gates."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pumpfleet.abreport import SHADOW, arm_reports
from pumpfleet.faults import DriftSpec
from pumpfleet.registry import CHAMPION, Registry, model_name
from pumpfleet.scoring import score_rul
from pumpfleet.settings import Settings
from pumpfleet.simulator import SimulationConfig, simulate
from pumpfleet.snapshot import open_snapshot

log = logging.getLogger(__name__)

# The demo's story: ESP motor-temperature sensors were recalibrated and now read 15 %
# high. The monitor should flag that class, and only that one.
DRIFT_CLASS, DRIFT_CHANNEL, DRIFT_FACTOR = "esp", "motor_temp", 1.15


class InProcessJobs:
    """The demo's job server: it records what the monitor submits, and the demo runs it
    in this process once Serve is down (a real cluster's job server runs it itself)."""

    address = "in-process"

    def __init__(self) -> None:
        self.submitted: list[tuple[list[str], str]] = []

    def running_classes(self) -> set[str]:
        return set()

    def submit(self, classes: list[str], reason: str) -> str:
        self.submitted.append((classes, reason))
        return f"demo-retrain-{'-'.join(classes)}"


def drift_harm(settings: Settings, cls: str, channel: str, factor: float) -> float:
    """How much the champion's holdout RMSE grows when ``channel`` reads ``factor`` high
    (a ratio; 1.0: the model does not care)."""
    from pumpfleet.metrics import rmse

    registry = Registry(settings.tracking_uri, settings.artifact_root)
    snap = open_snapshot(settings.features_uri)
    with tempfile.TemporaryDirectory(prefix="pumpfleet-harm-") as tmp:
        model = registry.load(model_name(cls), CHAMPION, Path(tmp))
    raw, cols = snap.load(cls, "holdout", model.spec)
    run = model.runner()
    out = []
    for f in (1.0, factor):
        x = raw.copy()
        x[:, :, model.spec.channels.index(channel)] *= f
        out.append(rmse(score_rul(x, model.spec, run).rul_hours, cols["rul_hours"]))
    return out[1] / out[0] if out[0] > 0 else 1.0


def new_data(
    settings: Settings, pumps: int, days: int, seed: int, cls: str, channel: str, factor: float
) -> dict[str, Any]:
    """The fleet's next ``days`` of history, recorded after the recalibration: ``cls``'s
    ``channel`` reads ``factor`` times the truth throughout. Retraining learns from the
    latest window of history, so the data source now holds these days."""
    drift = DriftSpec(kind="offset", classes=(cls,), channel=channel, scale=factor)
    cfg = SimulationConfig(pumps=pumps, days=days, seed=seed + 1, drifts=[drift])
    return simulate(cfg, settings.data_uri, overwrite=True)


def post_drift_ab(
    settings: Settings, snapshot: str, cls: str, champion: str, challenger: str
) -> dict[str, Any]:
    """Both versions on the same post-drift windows that neither trained on (validation and
    holdout pumps, and every pump's windows after the time cutoff), compared as a shadow
    test is: the difference in RMSE with a 95 % interval from a bootstrap over pumps
    (pumpfleet.abreport). Every window of the new snapshot is post-drift."""
    snap = open_snapshot(settings.features_uri, snapshot)
    registry = Registry(settings.tracking_uri, settings.artifact_root)
    preds = {}
    with tempfile.TemporaryDirectory(prefix="pumpfleet-ab-") as tmp:
        for v in (champion, challenger):
            model = registry.load_version(model_name(cls), v, Path(tmp) / v)
            parts = [snap.load(cls, s, model.spec) for s in ("val", "holdout", "future")]
            raw = np.concatenate([p[0] for p in parts])
            cols = {k: np.concatenate([p[1][k] for p in parts]) for k in parts[0][1]}
            preds[v] = (score_rul(raw, model.spec, model.runner()).rul_hours, cols)
    rul_champ, cols = preds[champion]
    ts = pd.Series(pd.to_datetime(cols["end_time"], utc=True)).dt.as_unit("ns")
    logged = pd.DataFrame(
        {
            "pump_id": cols["pump_id"],
            "pump_class": cls,
            "timestamp": ts,
            "arm": "champion",
            "model_version": champion,
            "rul_hours": rul_champ,
            "shadow_version": challenger,
            "shadow_rul_hours": preds[challenger][0],
        }
    )
    # The labels as feedback would bring them: each window's true RUL, seen at its end.
    feedback = pd.DataFrame(
        {"pump_id": cols["pump_id"], "observed_at": ts, "rul_hours": cols["rul_hours"]}
    )
    reports, diffs = arm_reports(logged, feedback)
    by_arm = {r.arm: r for r in reports}
    diff = diffs[0]
    return {
        "windows": len(logged),
        "pumps": int(logged["pump_id"].nunique()),
        "champion": champion,
        "challenger": challenger,
        "champion_rmse": by_arm["champion"].rmse,
        "challenger_rmse": by_arm[SHADOW].rmse,
        "difference": diff.rmse_diff,
        "ci": diff.ci,
        "verdict": diff.verdict,
    }


def closed_loop(
    settings: Settings, demo: Any, cls: str, reason: str, channel: str, factor: float
) -> dict[str, Any]:
    """New data → retrain ``cls`` (challenger only) → A/B on post-drift data →
    evaluation with the gates, which promote it if it wins."""
    from pumpfleet.evaluation_run import run_evaluate
    from pumpfleet.search_space import AnomalySearchSpace, SearchSpace
    from ray_jobs.retrain import run_retrain

    registry = Registry(settings.tracking_uri, settings.artifact_root)
    champion = registry.version_by_alias(model_name(cls), CHAMPION)
    sim = new_data(settings, demo.pumps, demo.days, demo.seed, cls, channel, factor)
    space = SearchSpace(epochs=demo.epochs, seed=demo.seed)
    health = AnomalySearchSpace(lr=[1e-2], epochs=demo.health_epochs, seed=demo.seed)
    retrain = run_retrain(settings, [cls], space, reason=reason, promote=False, health_space=health)
    challenger = retrain["classes"][cls]["challenger"]
    ab = post_drift_ab(settings, retrain["snapshot_id"], cls, str(champion), challenger)
    log.info("A/B on post-drift data: %s", ab)
    evaluation = run_evaluate(settings, retrain["snapshot_id"], classes=[cls], promote=True)
    ev = evaluation["classes"][cls]
    return {
        "pump_class": cls,
        "reason": reason,
        "new_readings": sim["readings"],
        "snapshot_id": retrain["snapshot_id"],
        "champion_before": champion,
        "challenger": challenger,
        "ab": ab,
        "promoted": ev["promoted"],
        "champion_after": ev["champion"],
        "decision": ev["reason"],
        "health": retrain["health"].get(cls),
        "holdout_rmse": {
            "challenger": ev["challenger_report"]["rmse"],
            "champion": (ev["champion_report"] or {}).get("rmse"),
        },
    }
