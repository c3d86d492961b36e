"""Offline A/B: challenger against champion on the same holdout, per class; the
promotion decision is the pure ``decide_promotion``; promotion moves the alias.

    python -m ray_jobs.evaluate [--snapshot ID]
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

import numpy as np

from pumpfleet import onnx_io
from pumpfleet.errors import DataError, RegistryError
from pumpfleet.features import decode_outputs, window_features
from pumpfleet.metrics import regression_report
from pumpfleet.promotion import PromotionPolicy, decide_promotion
from pumpfleet.registry import CHALLENGER, CHAMPION, LoadedModel, Registry, model_name
from pumpfleet.settings import Settings, get_settings
from pumpfleet.snapshot import Snapshot, open_snapshot
from ray_jobs.cli import run_main

log = logging.getLogger(__name__)

EXPERIMENT = "pumpfleet-evaluate"


Holdout = tuple[np.ndarray, dict[str, np.ndarray]]


def score_holdout(model: LoadedModel, snap: Snapshot, split: str) -> dict[str, float | None]:
    """A registered model's report on one split of a snapshot's windows (read for the
    model's own feature spec), through onnxruntime."""
    raw, cols = snap.load(model.spec.pump_class, split, model.spec)
    x = window_features(raw, model.spec)
    rul, prob = decode_outputs(onnx_io.run(onnx_io.session(model.onnx), x), model.spec)
    return regression_report(rul, cols["rul_hours"], prob, cols["failure_within_horizon"])


def baseline_report(train: dict[str, np.ndarray], holdout: Holdout) -> dict[str, float | None]:
    """The trivial model: the training mean RUL and failure rate, for every window."""
    hold = holdout[1]
    n = len(hold["rul_hours"])
    rul = np.full(n, float(np.mean(train["rul_hours"])))
    prob = np.full(n, float(np.mean(train["failure_within_horizon"])))
    return regression_report(rul, hold["rul_hours"], prob, hold["failure_within_horizon"])


def evaluate_class(
    registry: Registry, snap: Snapshot, cls: str, policy: PromotionPolicy
) -> dict[str, Any]:
    name = model_name(cls)
    holdout = snap.load(cls, "holdout")
    if len(holdout[0]) == 0:
        raise DataError(f"{cls}: the holdout of snapshot {snap.id} is empty")
    challenger = registry.load(name, CHALLENGER)
    champion_version = registry.version_by_alias(name, CHAMPION)
    champ_report = None
    if champion_version is not None and champion_version != challenger.version:
        champ_report = score_holdout(registry.load(name, CHAMPION), snap, "holdout")
    ch_report = score_holdout(challenger, snap, "holdout")
    base = baseline_report(snap.load(cls, "train")[1], holdout)
    # The time holdout (train and val pumps after the cutoff): reported, not gated on.
    future = snap.load(cls, "future")
    future_report = score_holdout(challenger, snap, "future") if len(future[0]) else None
    if champion_version == challenger.version:
        promote, reason = False, "challenger is already champion"
    else:
        decision = decide_promotion(ch_report, champ_report, base, policy)
        promote, reason = decision.promote, decision.reason
    if promote:
        registry.set_alias(name, CHAMPION, challenger.version)
    registry.set_version_tags(
        name,
        challenger.version,
        {
            "eval.snapshot": snap.id,
            "eval.rmse": f"{ch_report['rmse']:.3f}",
            "eval.decision": "promoted" if promote else "kept",
            "eval.reason": reason,
        },
    )
    log.info(
        "%s: challenger v%s %s (%s)",
        cls,
        challenger.version,
        "promoted" if promote else "not promoted",
        reason,
    )
    return {
        "challenger": challenger.version,
        "champion_before": champion_version,
        "champion": registry.version_by_alias(name, CHAMPION),
        "promoted": promote,
        "reason": reason,
        "challenger_report": ch_report,
        "champion_report": champ_report,
        "baseline_report": base,
        "future_report": future_report,
    }


def run_evaluate(
    settings: Settings, snapshot: str = "latest", policy: PromotionPolicy | None = None
) -> dict[str, Any]:
    policy = policy or PromotionPolicy()
    snap = open_snapshot(str(settings.features_dir), snapshot)
    registry = Registry(settings.tracking_uri, settings.artifact_root)
    run_id = registry.start_run(
        EXPERIMENT,
        f"evaluate-{snap.id}",
        params=policy.model_dump(),
        tags={"feature_snapshot": snap.id},
    )
    out: dict[str, Any] = {}
    for cls in snap.classes:
        if registry.version_by_alias(model_name(cls), CHALLENGER) is None:
            log.warning("%s: no challenger registered; skipped", cls)
            continue
        out[cls] = evaluate_class(registry, snap, cls, policy)
        r = out[cls]
        registry.log_metrics(
            run_id,
            {
                f"{cls}.challenger_rmse": r["challenger_report"]["rmse"],
                f"{cls}.baseline_rmse": r["baseline_report"]["rmse"],
                f"{cls}.promoted": float(r["promoted"]),
            },
        )
    registry.end_run(run_id)
    if not out:
        raise RegistryError("no challenger to evaluate; run `pumpfleet train` first")
    return {"snapshot_id": snap.id, "classes": out}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ray_jobs.evaluate", description=__doc__)
    parser.add_argument("--snapshot", default="latest")
    args = parser.parse_args(argv)
    return run_main(lambda: run_evaluate(get_settings(), args.snapshot))


if __name__ == "__main__":
    raise SystemExit(main())
