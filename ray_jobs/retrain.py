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
import os
import secrets
import time
from typing import Any

from pumpfleet.errors import InputError, RegistryError
from pumpfleet.lifecycle import current_user
from pumpfleet.settings import Settings, get_settings
from pumpfleet.windows import WindowConfig
from ray_jobs._ray import init_ray
from ray_jobs.cli import run_main
from ray_jobs.train import SearchSpace, space_from_args

log = logging.getLogger(__name__)

ENTRYPOINT = "python -m ray_jobs.retrain"


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
    from ray_jobs.evaluate import run_evaluate
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
    ``pumpfleet retrain`` (the same names in both; each parser checks its values)."""
    return run_retrain(
        settings,
        args.classes,
        space_from_args(args),
        args.source,
        args.reason,
        args.promote,
        health=not args.no_health,
        ab_weight=args.ab_weight,
        shadow=args.shadow,
    )


def submit_retrain(
    address: str,
    classes: list[str] | None,
    reason: str,
    epochs: int | None = None,
    runtime_env: dict[str, Any] | None = None,
) -> str:
    """Submit the retraining job to the Ray job server at ``address`` (its dashboard URL);
    returns the submission id. Token authentication, where the cluster has it on, comes
    from the environment (``RAY_AUTH_TOKEN``) as for every Ray client."""
    import shlex

    from ray.job_submission import JobSubmissionClient

    args = [ENTRYPOINT, "--reason", shlex.quote(reason)]
    if classes:
        args += ["--classes", *(shlex.quote(c) for c in classes)]
    if epochs is not None:
        args += ["--epochs", str(int(epochs))]
    headers = None
    token = os.environ.get("RAY_AUTH_TOKEN")
    if token:
        headers = {"Authorization": f"Bearer {token}"}
    client = JobSubmissionClient(address, headers=headers)
    job_id = f"pumpfleet-retrain-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
    return str(
        client.submit_job(
            entrypoint=" ".join(args),
            submission_id=job_id,
            runtime_env=runtime_env,
            # the monitor reads the classes back to keep one running job per class
            metadata={
                "pumpfleet": "retrain",
                "reason": reason[:200],
                "classes": ",".join(classes or []),
            },
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ray_jobs.retrain", description=__doc__)
    parser.add_argument("--classes", nargs="+", default=None, help="only these classes")
    parser.add_argument("--reason", default="requested", help="why (recorded with the run)")
    parser.add_argument("--source", default=None, help="fleet dataset (default: workspace)")
    parser.add_argument("--config", help="search space, YAML or JSON (see SearchSpace)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--promote", action="store_true", help="promote a challenger that passes the gates"
    )
    parser.add_argument(
        "--no-health", action="store_true", help="leave the classes' health models as they are"
    )
    parser.add_argument(
        "--ab-weight", type=float, default=None, help="start an A/B test at this weight"
    )
    parser.add_argument(
        "--shadow", action="store_true", default=None, help="start a shadow test instead"
    )
    args = parser.parse_args(argv)

    def job() -> dict[str, Any]:
        if args.classes is not None and not all(args.classes):
            raise InputError("--classes: empty class name")
        if args.ab_weight is not None and not 0.0 <= args.ab_weight <= 1.0:
            raise InputError(f"--ab-weight must be between 0 and 1, got {args.ab_weight}")
        settings = get_settings()
        init_ray(settings)
        return retrain_from_args(settings, args)

    return run_main(job)


if __name__ == "__main__":
    raise SystemExit(main())
