"""Offline A/B, the deciding half: each class's challenger gated against its champion
(``pumpfleet.evaluation``), the decision logged as an MLflow run, and a promotion moving
the alias (``pumpfleet.lifecycle``). Also the gated manual promotion. No Ray: the job
``python -m ray_jobs.evaluate`` and ``pumpfleet evaluate`` / ``promote`` call these.
"""

from __future__ import annotations

import logging
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from pumpfleet import lifecycle
from pumpfleet.errors import InputError, RegistryError
from pumpfleet.evaluation import Comparison, compare, split_metrics
from pumpfleet.promotion import Decision, PromotionPolicy
from pumpfleet.registry import CHALLENGER, CHAMPION, Registry, model_name
from pumpfleet.settings import Settings
from pumpfleet.snapshot import Snapshot, open_snapshot

log = logging.getLogger(__name__)

EXPERIMENT = "pumpfleet-evaluate"


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
    snap = open_snapshot(settings.features_uri, snapshot)
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
    snap = open_snapshot(settings.features_uri, snapshot)
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
