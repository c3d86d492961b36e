"""Retraining: ingest what has arrived → train challengers for the affected classes only →
evaluate them with the gates → (only if asked) promote. The classes that have a health
(anomaly) model get a new one on the same snapshot, gated and (only if asked) promoted by
its own policy. The orchestration is ``pumpfleet.retraining``; this job runs its Ray
steps (``ray_jobs.ingest``, ``ray_jobs.train``, ``ray_jobs.train_anomaly``).

    python -m ray_jobs.retrain [--classes esp rod] [--reason "drift on esp"] [--promote]
                               [--no-health]

Submitted as a Ray job by the Serve admin route (``POST /v1/admin/retrain``) and the
monitor, and run by hand or on a schedule. It ingests the fleet the champions' snapshot
was ingested from, with the same ingest settings (``pumpfleet.retraining.retrain_data``);
``--source`` names another fleet. Without ``--promote`` a challenger that passes the gates stays
challenger: a person (``pumpfleet promote``) or an online A/B test decides.
"""

from __future__ import annotations

import argparse
from typing import Any

from pumpfleet import retraining
from pumpfleet.entry import exiting, run_main
from pumpfleet.job_options import RetrainOptions, add_retrain_args
from pumpfleet.search_space import AnomalySearchSpace, SearchSpace
from pumpfleet.settings import Settings, get_settings
from ray_jobs._ray import init_ray


def ray_steps() -> retraining.RetrainSteps:
    """The retrain's Ray steps: the ingest, training and anomaly-training jobs."""
    from ray_jobs.ingest import ingest_and_log
    from ray_jobs.train import run_train
    from ray_jobs.train_anomaly import run_train_anomaly

    return retraining.RetrainSteps(ingest_and_log, run_train, run_train_anomaly)


def run_retrain(
    settings: Settings,
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
    """:func:`pumpfleet.retraining.run_retrain` with the Ray steps."""
    return retraining.run_retrain(
        settings,
        ray_steps(),
        classes,
        space,
        source,
        reason,
        promote,
        health,
        health_space,
        ab_weight,
        shadow,
    )


def retrain_with(settings: Settings, options: RetrainOptions) -> dict[str, Any]:
    """:func:`pumpfleet.retraining.retrain_with` with the Ray steps."""
    return retraining.retrain_with(settings, ray_steps(), options)


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
    raise SystemExit(exiting(main()))
