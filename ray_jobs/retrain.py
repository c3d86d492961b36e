"""Retraining: ingest what has arrived → train challengers for the affected classes only →
evaluate them with the gates → (only if asked) promote. The classes that have a health
(anomaly) model get a new one on the same snapshot, gated and (only if asked) promoted by
its own policy (``ray_jobs.train_anomaly``).

    python -m ray_jobs.retrain [--classes esp rod] [--reason "drift on esp"] [--promote]
                               [--no-health]

Submitted as a Ray job by the Serve admin route (``POST /v1/admin/retrain``), and run by
hand or on a schedule. Without ``--promote`` a challenger that passes the gates stays
challenger: a person (``pumpfleet promote``) or an online A/B test decides.
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import Any

from pumpfleet.entry import run_main
from pumpfleet.errors import RegistryError
from pumpfleet.job_options import RetrainOptions, add_retrain_args
from pumpfleet.lifecycle import current_user
from pumpfleet.settings import Settings, get_settings
from pumpfleet.windows import WindowConfig
from ray_jobs._ray import init_ray
from ray_jobs.train import SearchSpace, space_from_args

log = logging.getLogger(__name__)


def run_retrain(
    settings: Settings,
    classes: list[str] | None = None,
    space: SearchSpace | None = None,
    source: str | None = None,
    reason: str = "requested",
    promote: bool = False,
    health: bool = True,
    health_space: Any = None,
    ab_weight: float | None = None,
    shadow: bool | None = None,
) -> dict[str, Any]:
    """Ingest → train ``classes`` (every class if None) → gates → promote if asked; with
    ``ab_weight`` and/or ``shadow``, start an online test of each new challenger that
    was not promoted (the split the scoring service reads from the registry)."""
    from pumpfleet.evaluation_run import run_evaluate
    from ray_jobs.ingest import ingest_and_log
    from ray_jobs.train import run_train

    started = time.monotonic()
    log.info("retraining %s: %s", ", ".join(classes) if classes else "every class", reason)
    ingest = ingest_and_log(
        settings, source or str(settings.data_dir), str(settings.features_dir), WindowConfig()
    )
    snapshot = ingest["snapshot_id"]
    train = run_train(settings, snapshot, space, classes)
    trained = sorted(train["classes"])
    if not trained:
        raise RegistryError("no challenger was trained; nothing to evaluate")
    evaluate = run_evaluate(
        settings, snapshot, who=current_user(), classes=trained, promote=promote
    )
    tests = start_tests(settings, evaluate["classes"], ab_weight, shadow)
    health_models = (
        _retrain_health(settings, snapshot, trained, promote, health_space) if health else {}
    )
    return {
        "reason": reason,
        "snapshot_id": snapshot,
        "new_snapshot": not ingest.get("up_to_date", False),
        "classes": {
            cls: {
                "challenger": r["challenger"],
                "champion": r["champion"],
                "promoted": r["promoted"],
                "reason": r["reason"],
            }
            for cls, r in evaluate["classes"].items()
        },
        "online_test": tests,
        "health": health_models,
        "failed_trials": train.get("failed_trials", {}),
        "minutes": round((time.monotonic() - started) / 60, 2),
    }


def start_tests(
    settings: Settings,
    evaluated: dict[str, dict[str, Any]],
    ab_weight: float | None,
    shadow: bool | None,
) -> dict[str, dict[str, str]]:
    """Set the A/B split (challenger weight, shadow) of each class whose new challenger
    is registered and not promoted: the scoring service follows it within seconds."""
    from pumpfleet.registry import Registry, model_name
    from pumpfleet.routing import split_tags

    tags = split_tags(ab_weight, shadow)
    if not tags:
        return {}
    registry = Registry(settings.tracking_uri, settings.artifact_root)
    started = {}
    for cls, r in sorted(evaluated.items()):
        if r.get("challenger") and not r.get("promoted") and r["challenger"] != r.get("champion"):
            registry.set_model_tags(model_name(cls), tags)
            started[cls] = tags
            log.info("%s: online test of v%s started: %s", cls, r["challenger"], tags)
    return started


def _retrain_health(
    settings: Settings, snapshot: str, classes: list[str], promote: bool, space: Any
) -> dict[str, Any]:
    """New health models for those of ``classes`` that have one. A class whose new data
    cannot train one (too few normal windows) keeps its model; the RUL retrain stands."""
    from pumpfleet.errors import DataError
    from pumpfleet.registry import Registry
    from ray_jobs.train_anomaly import run_train_anomaly

    have = sorted(set(classes) & set(Registry(settings.tracking_uri).anomaly_classes()))
    if not have:
        return {}
    try:
        out = run_train_anomaly(settings, snapshot, space, have, promote)
    except DataError as e:
        log.warning("health models of %s not retrained: %s", ", ".join(have), e)
        return {c: {"registered": False, "gate": str(e)} for c in have}
    keep = ("version", "registered", "promoted", "promotion", "gate", "threshold")
    return {c: {k: r[k] for k in keep if k in r} for c, r in out["classes"].items()}


def retrain_from_args(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """:func:`run_retrain` with the options of ``python -m ray_jobs.retrain`` and
    ``pumpfleet retrain`` (both parsers come from ``pumpfleet.job_options``)."""
    return retrain_with(settings, RetrainOptions.from_args(args))


def retrain_with(settings: Settings, options: RetrainOptions) -> dict[str, Any]:
    """:func:`run_retrain` as ``options`` say; the summary echoes the options, so that
    whoever submitted the job can see what arrived."""
    result = run_retrain(
        settings,
        options.classes,
        space_from_args(argparse.Namespace(**options.model_dump())),
        options.source,
        options.reason,
        options.promote,
        health=not options.no_health,
        ab_weight=options.ab_weight,
        shadow=options.shadow,
    )
    return result | {"options": options.model_dump()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ray_jobs.retrain", description=__doc__)
    add_retrain_args(parser)
    args = parser.parse_args(argv)

    def job() -> dict[str, Any]:
        options = RetrainOptions.from_args(args)
        settings = get_settings()
        init_ray(settings)
        return retrain_with(settings, options)

    return run_main(job)


if __name__ == "__main__":
    raise SystemExit(main())
