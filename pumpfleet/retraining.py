"""Retraining: ingest what has arrived → train challengers for the affected classes only →
evaluate them with the gates → (only if asked) promote, and (if asked) start an online
test of each new challenger that was not promoted. The classes that have a health
(anomaly) model get a new one on the same snapshot, gated and (only if asked) promoted by
its own policy (``pumpfleet.anomaly_training``).

It ingests the fleet the champions were trained on, with the ingest settings recorded
with their snapshot (:func:`retrain_data`): a fleet ingested with 50-step windows from
``s3://bucket/fleet`` is retrained from there with 50-step windows, whoever asked.

The steps that run on Ray (ingest, the two searches) come in as :class:`RetrainSteps`:
``ray_jobs.retrain`` passes the Ray jobs' own, so the orchestration here needs no Ray.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pumpfleet.errors import DataError, InputError, PumpfleetError, RegistryError
from pumpfleet.evaluation_run import run_evaluate
from pumpfleet.job_options import RetrainOptions
from pumpfleet.lifecycle import current_user
from pumpfleet.registry import CHAMPION, Registry, model_name
from pumpfleet.routing import split_tags
from pumpfleet.search_space import AnomalySearchSpace, SearchSpace, space_from_args
from pumpfleet.settings import Settings
from pumpfleet.snapshot import Snapshot, open_snapshot
from pumpfleet.windows import WindowConfig

log = logging.getLogger(__name__)

Summary = dict[str, Any]


@dataclass(frozen=True)
class RetrainSteps:
    """The steps of a retrain that run on Ray, with the Ray jobs' signatures:
    ``ingest(settings, source, features_root, window_config)``,
    ``train(settings, snapshot, space, classes)`` and
    ``train_anomaly(settings, snapshot, space, classes, promote)``."""

    ingest: Callable[[Settings, str, str, WindowConfig], Summary]
    train: Callable[[Settings, str, SearchSpace | None, list[str] | None], Summary]
    train_anomaly: Callable[
        [Settings, str, AnomalySearchSpace | None, list[str] | None, bool], Summary
    ]


@dataclass(frozen=True)
class RetrainData:
    """What a retrain ingests: the fleet dataset, the features folder and the ingest
    settings, and the snapshot they were recorded with (None: the defaults)."""

    source: str
    features_root: str
    config: WindowConfig
    recorded_with: str | None


def _recorded(snap: Snapshot) -> tuple[str, WindowConfig] | None:
    """The fleet a snapshot was ingested from and the settings it was ingested with."""
    source = snap.manifest.get("summary", {}).get("source")
    config = snap.manifest.get("config")
    if not source or config is None:
        return None
    return str(source), WindowConfig.model_validate(config)


def retrain_data(
    settings: Settings, classes: list[str] | None, source: str | None = None
) -> RetrainData:
    """The fleet and ingest settings recorded with the snapshot the champions of
    ``classes`` (every class if None) were trained on; where no class has a champion,
    those of the latest snapshot; else the workspace's data with the default settings.
    ``source`` replaces the recorded fleet (the settings stay the recorded ones).
    Champions trained on fleets ingested differently are an InputError: retrain them
    one by one."""
    root = settings.features_uri
    registry = Registry(settings.tracking_uri, settings.artifact_root)
    found: dict[tuple[str, str], str] = {}  # (fleet, settings) → the snapshot that says so
    for cls in classes if classes is not None else registry.classes():
        version = registry.version_by_alias(model_name(cls), CHAMPION)
        sid = version and registry.version_tags(model_name(cls), version).get("feature_snapshot")
        if not sid:
            continue
        try:
            recorded = _recorded(open_snapshot(root, sid))
        except PumpfleetError as e:
            log.warning("%s: the champion's snapshot is unreadable: %s", cls, e)
            continue
        if recorded is not None:
            found.setdefault((recorded[0], recorded[1].model_dump_json()), sid)
    if not found:
        try:
            latest = open_snapshot(root)
        except PumpfleetError:
            latest = None
        recorded = _recorded(latest) if latest is not None else None
        if latest is not None and recorded is not None:
            found[(recorded[0], recorded[1].model_dump_json())] = latest.id
    if len(found) > 1:
        said = "; ".join(f"snapshot {sid}: {fleet}" for (fleet, _), sid in sorted(found.items()))
        raise InputError(
            f"the champions were trained on fleets ingested differently ({said}): "
            "retrain their classes one at a time"
        )
    if not found:
        return RetrainData(source or settings.data_uri, root, WindowConfig(), None)
    ((fleet, config), sid) = next(iter(found.items()))
    return RetrainData(source or fleet, root, WindowConfig.model_validate_json(config), sid)


def run_retrain(
    settings: Settings,
    steps: RetrainSteps,
    classes: list[str] | None = None,
    space: SearchSpace | None = None,
    source: str | None = None,
    reason: str = "requested",
    promote: bool = False,
    health: bool = True,
    health_space: AnomalySearchSpace | None = None,
    ab_weight: float | None = None,
    shadow: bool | None = None,
) -> dict[str, Any]:
    """Ingest → train ``classes`` (every class if None) → gates → promote if asked; with
    ``ab_weight`` and/or ``shadow``, start an online test of each new challenger that
    was not promoted (the split the scoring service reads from the registry)."""
    started = time.monotonic()
    log.info("retraining %s: %s", ", ".join(classes) if classes else "every class", reason)
    data = retrain_data(settings, classes, source)
    log.info(
        "ingesting %s with the settings of snapshot %s: %s",
        data.source,
        data.recorded_with or "(none: the defaults)",
        data.config.model_dump(),
    )
    ingest = steps.ingest(settings, data.source, data.features_root, data.config)
    snapshot = ingest["snapshot_id"]
    train = steps.train(settings, snapshot, space, classes)
    trained = sorted(train["classes"])
    if not trained:
        raise RegistryError("no challenger was trained; nothing to evaluate")
    evaluate = run_evaluate(
        settings, snapshot, who=current_user(), classes=trained, promote=promote
    )
    tests = start_tests(settings, evaluate["classes"], ab_weight, shadow)
    health_models = (
        retrain_health(settings, steps, snapshot, trained, promote, health_space) if health else {}
    )
    return {
        "reason": reason,
        "source": data.source,
        "ingest_config": data.config.model_dump(),
        "settings_of_snapshot": data.recorded_with,
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


def retrain_health(
    settings: Settings,
    steps: RetrainSteps,
    snapshot: str,
    classes: list[str],
    promote: bool,
    space: AnomalySearchSpace | None,
) -> dict[str, Any]:
    """New health models for those of ``classes`` that have one. A class whose new data
    cannot train one (too few normal windows) keeps its model; the RUL retrain stands."""
    have = sorted(set(classes) & set(Registry(settings.tracking_uri).anomaly_classes()))
    if not have:
        return {}
    try:
        out = steps.train_anomaly(settings, snapshot, space, have, promote)
    except DataError as e:
        log.warning("health models of %s not retrained: %s", ", ".join(have), e)
        return {c: {"registered": False, "gate": str(e)} for c in have}
    keep = ("version", "registered", "promoted", "promotion", "gate", "threshold")
    return {c: {k: r[k] for k in keep if k in r} for c, r in out["classes"].items()}


def retrain_with(
    settings: Settings, steps: RetrainSteps, options: RetrainOptions
) -> dict[str, Any]:
    """:func:`run_retrain` as ``options`` say; the summary echoes the options, so that
    whoever submitted the job can see what arrived."""
    result = run_retrain(
        settings,
        steps,
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
