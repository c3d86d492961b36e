"""Offline A/B: challenger against champion on the same holdout, per class and per slice
(site, operating regime, RUL bucket), with each model's latency, size and ONNX parity.
The decision is the pure ``decide_promotion``; it is logged as an MLflow run, and a
promotion moves the alias (``pumpfleet.lifecycle``). Also the gated manual promotion.

    python -m ray_jobs.evaluate [--snapshot ID]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from pumpfleet import lifecycle, runtime
from pumpfleet.entry import run_main
from pumpfleet.errors import DataError, InputError, RegistryError
from pumpfleet.metrics import Metrics, score, slice_labels, slice_metrics
from pumpfleet.promotion import Decision, ModelReport, PromotionPolicy, decide_promotion
from pumpfleet.registry import CHALLENGER, CHAMPION, LoadedModel, Registry, model_name
from pumpfleet.scoring import RulScores, score_rul
from pumpfleet.settings import Settings, get_settings
from pumpfleet.snapshot import Snapshot, open_snapshot

log = logging.getLogger(__name__)

EXPERIMENT = "pumpfleet-evaluate"
PARITY_TAG = "onnx_parity_max_abs"
LATENCY_RUNS = 300
LATENCY_WARMUP = 20


@dataclass(frozen=True)
class Holdout:
    """One class's holdout labels and each window's slices, read once with the
    snapshot's own spec, so that every model is scored on the same windows and slices."""

    pump_class: str
    rul: np.ndarray
    failure: np.ndarray
    slices: dict[str, np.ndarray]


def load_holdout(snap: Snapshot, cls: str) -> Holdout:
    raw, cols = snap.load(cls, "holdout")
    if len(raw) == 0:
        raise DataError(f"{cls}: the holdout of snapshot {snap.id} is empty")
    return Holdout(
        cls,
        cols["rul_hours"],
        cols["failure_within_horizon"],
        slice_labels(raw, cols, snap.spec(cls)),
    )


def p50_latency_ms(sess: Any, window: np.ndarray, runs: int = LATENCY_RUNS) -> float:
    """Median onnxruntime latency of scoring one window, as the edge and Serve do."""
    x = np.ascontiguousarray(window[None], dtype=np.float32)
    for _ in range(LATENCY_WARMUP):
        runtime.run(sess, x)
    times = np.empty(runs)
    for i in range(runs):
        t0 = time.perf_counter_ns()
        runtime.run(sess, x)
        times[i] = time.perf_counter_ns() - t0
    return float(np.median(times)) / 1e6


def recorded_parity(registry: Registry, model: LoadedModel) -> float | None:
    """The torch / ONNX max abs difference measured when the version was registered: a
    version tag, or (older versions) a tag of its training run."""
    value = model.tags.get(PARITY_TAG) or registry.run_tags(model.run_id).get(PARITY_TAG)
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _predict(model: LoadedModel, raw: np.ndarray) -> tuple[Any, RulScores]:
    """Score raw windows of the model's inputs by the one scoring path: (session, scores)."""
    sess = runtime.session(model.onnx)
    return sess, score_rul(raw, model.spec, runtime.runner(sess))


def model_report(
    registry: Registry, model: LoadedModel, snap: Snapshot, hold: Holdout
) -> ModelReport:
    """A registered model on a class's holdout, through onnxruntime: overall and per
    slice, with its single-window latency, ONNX size and recorded parity."""
    raw, _ = snap.load(hold.pump_class, "holdout", model.spec)
    sess, scored = _predict(model, raw)
    rul, prob, x = scored.rul_hours, scored.failure_probability, scored.features
    if len(rul) != len(hold.rul):
        raise DataError(f"{hold.pump_class}: v{model.version} scored {len(rul)} windows")
    th = model.spec.alert_threshold
    overall = score(rul, hold.rul, prob, hold.failure, th)
    return ModelReport(
        **overall.model_dump(),
        version=model.version,
        slices=slice_metrics(rul, hold.rul, prob, hold.failure, hold.slices, th),
        latency_p50_ms=p50_latency_ms(sess, x[0]),
        size_bytes=len(model.onnx),
        onnx_parity_max_abs=recorded_parity(registry, model),
    )


def split_metrics(model: LoadedModel, snap: Snapshot, cls: str, split: str) -> Metrics | None:
    """A model's overall metrics on another split (None if it is empty)."""
    raw, cols = snap.load(cls, split, model.spec)
    if len(raw) == 0:
        return None
    s = _predict(model, raw)[1]
    return score(
        s.rul_hours,
        cols["rul_hours"],
        s.failure_probability,
        cols["failure_within_horizon"],
        model.spec.alert_threshold,
    )


def baseline_metrics(snap: Snapshot, hold: Holdout) -> Metrics:
    """The trivial model: the training mean RUL and failure rate, for every window."""
    train = snap.load(hold.pump_class, "train")[1]
    n = len(hold.rul)
    rul = np.full(n, float(np.mean(train["rul_hours"])))
    prob = np.full(n, float(np.mean(train["failure_within_horizon"])))
    return score(rul, hold.rul, prob, hold.failure)


@dataclass
class Comparison:
    challenger: ModelReport
    champion: ModelReport | None
    baseline: Metrics
    decision: Decision


def compare(
    registry: Registry,
    snap: Snapshot,
    cls: str,
    candidate: LoadedModel,
    champion: LoadedModel | None,
    policy: PromotionPolicy,
) -> Comparison:
    hold = load_holdout(snap, cls)
    ch = model_report(registry, candidate, snap, hold)
    champ = model_report(registry, champion, snap, hold) if champion is not None else None
    base = baseline_metrics(snap, hold)
    return Comparison(ch, champ, base, decide_promotion(ch, champ, base, policy))


def _log_decision(
    registry: Registry,
    snap: Snapshot,
    cls: str,
    cmp: Comparison,
    policy: PromotionPolicy,
    parent: str | None,
    who: str,
) -> str:
    """The decision as an MLflow run: policy as params, both reports as metrics, the
    verdict as tags, everything (slices, gates) as ``decision.json``."""
    ch, champ = cmp.challenger, cmp.champion
    run_id = registry.start_run(
        EXPERIMENT,
        f"{cls}-v{ch.version}-vs-" + (f"v{champ.version}" if champ else "baseline"),
        params=policy.model_dump(),
        tags={
            "mlflow.user": who,
            "pump_class": cls,
            "feature_snapshot": snap.id,
            "challenger_version": str(ch.version),
            "champion_version": str(champ.version) if champ else "",
            "decision": "promote" if cmp.decision.promote else "reject",
            "reason": cmp.decision.reason[:5000],
        },
        parent_run_id=parent,
    )
    keys = ("rmse", "mae", "phm08", "auc", "precision", "recall", "brier", "ece")
    metrics: dict[str, Any] = {f"baseline.{k}": getattr(cmp.baseline, k) for k in keys}
    for role, rep in (("challenger", ch), ("champion", champ)):
        if rep is not None:
            metrics |= {f"{role}.{k}": getattr(rep, k) for k in keys}
            metrics |= {f"{role}.latency_p50_ms": rep.latency_p50_ms}
            metrics |= {f"{role}.size_bytes": rep.size_bytes}
    metrics["promoted"] = float(cmp.decision.promote)
    registry.log_metrics(run_id, metrics)
    registry.log_dict(
        run_id,
        {
            "decision": cmp.decision.model_dump(),
            "reasons": cmp.decision.reasons,
            "challenger": ch.model_dump(),
            "champion": champ.model_dump() if champ else None,
            "baseline": cmp.baseline.model_dump(),
        },
        "decision.json",
    )
    registry.end_run(run_id)
    return run_id


def evaluate_class(
    registry: Registry,
    snap: Snapshot,
    cls: str,
    policy: PromotionPolicy,
    who: str,
    now: datetime,
    parent: str | None = None,
    promote: bool = True,
) -> dict[str, Any]:
    """Gate the class's challenger against its champion; promote it if the gates pass and
    ``promote`` (else it stays challenger, for a person or an online test to decide)."""
    name = model_name(cls)
    with tempfile.TemporaryDirectory(prefix="pumpfleet-eval-") as tmp:
        challenger = registry.load(name, CHALLENGER, Path(tmp))
        champion_version = registry.version_by_alias(name, CHAMPION)
        champion = None
        if champion_version not in (None, challenger.version):
            champion = registry.load(name, CHAMPION, Path(tmp))
        cmp = compare(registry, snap, cls, challenger, champion, policy)
        future = split_metrics(challenger, snap, cls, "future")  # reported, not gated on
    decision = cmp.decision
    # Cases the gates do not get to decide: nothing to move, or a version rolled back
    # from production that only a person may put back.
    if champion_version == challenger.version:
        # Its gates compared it with the baseline, as a first model: not worth keeping.
        decision = Decision(promote=False, reason="challenger is already champion", gates=[])
    elif (rolled := lifecycle.rolled_back(challenger.tags)) is not None:
        reason = f"v{challenger.version} was {rolled}; only `pumpfleet promote` puts it back"
        decision = Decision(promote=False, reason=reason, gates=decision.gates)
    if decision.promote and not promote:
        reason = (
            f"passed the gates; kept as challenger (automatic promotion off): {decision.reason}"
        )
        decision = Decision(promote=False, reason=reason, gates=decision.gates)
    cmp.decision = decision
    run_id = _log_decision(registry, snap, cls, cmp, policy, parent, who)
    why = f"evaluate on snapshot {snap.id}: {decision.reason}"
    if decision.promote:
        lifecycle.promote(
            registry, cls, challenger.version, who=who, why=why, now=now, source="evaluate"
        )
    elif champion_version != challenger.version:
        lifecycle.record_rejection(registry, cls, challenger.version, who=who, why=why, now=now)
    registry.set_version_tags(
        name,
        challenger.version,
        {
            "eval.snapshot": snap.id,
            "eval.rmse": f"{cmp.challenger.rmse:.3f}",
            "eval.decision": "promoted" if decision.promote else "kept",
            "eval.reason": decision.reason[:4000],
            "eval.mlflow_run_id": run_id,
        },
    )
    for line in decision.reasons:
        log.info("%s v%s: %s", cls, challenger.version, line)
    log.info(
        "%s: challenger v%s %s (%s)",
        cls,
        challenger.version,
        "promoted" if decision.promote else "not promoted",
        decision.reason,
    )
    return {
        "challenger": challenger.version,
        "champion_before": champion_version,
        "champion": registry.version_by_alias(name, CHAMPION),
        "promoted": decision.promote,
        "reason": decision.reason,
        "reasons": decision.reasons,
        "decision": decision.model_dump(),
        "challenger_report": cmp.challenger.model_dump(),
        "champion_report": cmp.champion.model_dump() if cmp.champion else None,
        "baseline_report": cmp.baseline.model_dump(),
        "future_report": future.model_dump() if future else None,
        "mlflow_run_id": run_id,
    }


def run_evaluate(
    settings: Settings,
    snapshot: str = "latest",
    policy: PromotionPolicy | None = None,
    who: str | None = None,
    now: datetime | None = None,
    classes: list[str] | None = None,
    promote: bool = True,
) -> dict[str, Any]:
    policy = policy or PromotionPolicy()
    who = who or lifecycle.current_user()
    snap = open_snapshot(str(settings.features_dir), snapshot)
    registry = Registry(settings.tracking_uri, settings.artifact_root)
    run_id = registry.start_run(
        EXPERIMENT,
        f"evaluate-{snap.id}",
        params=policy.model_dump(),
        tags={"feature_snapshot": snap.id, "mlflow.user": who},
    )
    out: dict[str, Any] = {}
    for cls in snap.classes if classes is None else classes:
        if registry.version_by_alias(model_name(cls), CHALLENGER) is None:
            log.warning("%s: no challenger registered; skipped", cls)
            continue
        r = evaluate_class(
            registry, snap, cls, policy, who, now or lifecycle.utc_now(), run_id, promote
        )
        out[cls] = r
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
    return {"snapshot_id": snap.id, "mlflow_run_id": run_id, "classes": out}


def promote_version(
    settings: Settings,
    cls: str,
    version: str,
    *,
    force: bool = False,
    reason: str | None = None,
    snapshot: str = "latest",
    policy: PromotionPolicy | None = None,
    who: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Make ``version`` the champion of ``cls`` by hand: through the gates against the
    current champion on the snapshot's holdout, or past them with ``force`` and a reason.

    Returns what happened; ``promoted`` is False (and the champion unmoved) when the gates
    reject it.
    """
    reason = (reason or "").strip() or None
    if force and reason is None:
        raise InputError("--force needs --reason: say why the gates are overridden")
    who = who or lifecycle.current_user()
    now = now or lifecycle.utc_now()
    registry = Registry(settings.tracking_uri, settings.artifact_root)
    name = lifecycle.check_class(registry, cls)
    registry.version_tags(name, version)  # unknown version: one clear error
    before = registry.version_by_alias(name, CHAMPION)
    if before == version:
        raise RegistryError(f"{cls}: v{version} is the champion already")
    result: dict[str, Any] = {"class": cls, "version": version, "champion_before": before}
    if force:
        why = str(reason)
        lifecycle.promote(registry, cls, version, who=who, why=why, now=now, forced=True)
        return result | {"promoted": True, "forced": True, "reasons": [], "reason": reason}
    policy = policy or PromotionPolicy()
    snap = open_snapshot(str(settings.features_dir), snapshot)
    with tempfile.TemporaryDirectory(prefix="pumpfleet-promote-") as tmp:
        candidate = registry.load_version(name, version, Path(tmp))
        champion = registry.load(name, CHAMPION, Path(tmp)) if before else None
        cmp = compare(registry, snap, cls, candidate, champion, policy)
    run_id = _log_decision(registry, snap, cls, cmp, policy, None, who)
    d = cmp.decision
    result |= {
        "promoted": d.promote,
        "forced": False,
        "reason": d.reason,
        "reasons": d.reasons,
        "mlflow_run_id": run_id,
    }
    if d.promote:
        why = (reason + " — " if reason else "manual promotion: ") + d.reason
        lifecycle.promote(registry, cls, version, who=who, why=why, now=now)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ray_jobs.evaluate", description=__doc__)
    parser.add_argument("--snapshot", default="latest")
    args = parser.parse_args(argv)
    return run_main(lambda: run_evaluate(get_settings(), args.snapshot))


if __name__ == "__main__":
    raise SystemExit(main())
