"""The monitor: drift of the served inputs and the champion's performance, per pump
class (classes as parallel Ray tasks), against the data the champion was validated on;
the anomaly (health) champion's alarm rate and score drift where a class has one; what
drives the champion's flags; alerts with hysteresis; retraining submitted for the classes
whose drift alerts. Writes an HTML report with the fleet drift map, the map as PNG, a
JSON summary, the per-chunk signals as Parquet, and MLflow metrics. The steps are
``pumpfleet.monitoring``; this job runs each class as a Ray task.

    python -m ray_jobs.monitor [--chunk-size N] [--consecutive K] [--jobs-address URL]
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import pandas as pd
import ray

from pumpfleet.alerts import AlertPolicy
from pumpfleet.drift import AnalysisConfig
from pumpfleet.entry import exiting, run_main
from pumpfleet.job_options import add_monitor_args, alert_policy
from pumpfleet.monitoring import run
from pumpfleet.monitoring.run import ClassInput, ClassOutcome
from pumpfleet.settings import Settings, get_settings
from pumpfleet.triggers import RetrainServer, jobs_address
from ray_jobs._ray import init_ray
from ray_jobs.triggers import job_server


@ray.remote(num_cpus=1)
def _class_task(
    settings: Settings,
    snapshot: str,
    cls: str,
    rows: pd.DataFrame,
    feedback: pd.DataFrame,
    cfg: AnalysisConfig,
) -> ClassOutcome:
    return run.analyse_one(settings, snapshot, cls, rows, feedback, cfg)


def analyse_on_ray(
    settings: Settings, snapshot: str, inputs: Mapping[str, ClassInput], cfg: AnalysisConfig
) -> dict[str, ClassOutcome]:
    """Every class's analysis as a Ray task, in parallel."""
    tasks = {
        c: _class_task.remote(settings, snapshot, c, r, f, cfg) for c, (r, f) in inputs.items()
    }
    return dict(zip(tasks, ray.get(list(tasks.values())), strict=True))


def run_monitor(
    settings: Settings,
    snapshot: str = "latest",
    chunk_size: int = 50,
    min_alert_chunks: int = 2,
    *,
    policy: AlertPolicy | None = None,
    address: str | None = None,
    trigger: bool = True,
    now: datetime | None = None,
    server: RetrainServer | None = None,
    std_multiplier: float | None = None,
    daily_fleet: bool = False,
) -> dict[str, Any]:
    """:func:`pumpfleet.monitoring.run.run_monitor` with the classes as Ray tasks (Ray is
    not needed when no class has enough predictions); retrains go to ``server``, else to
    the job server at ``address`` (else ``PUMPFLEET_JOBS_ADDRESS``) when ``trigger``."""
    if trigger and server is None:
        server = job_server(jobs_address(address), settings)
    return run.run_monitor(
        settings,
        snapshot,
        chunk_size,
        min_alert_chunks,
        policy=policy,
        server=server,
        trigger=trigger,
        now=now,
        std_multiplier=std_multiplier,
        analyse=analyse_on_ray,
        daily_fleet=daily_fleet,
    )


def monitor_from_args(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """:func:`run_monitor` with the options of ``add_monitor_args``."""
    return run_monitor(
        settings,
        args.snapshot,
        args.chunk_size,
        policy=alert_policy(args),
        address=args.jobs_address,
        trigger=not args.no_trigger,
        std_multiplier=args.std_multiplier,
        daily_fleet=args.daily_fleet,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ray_jobs.monitor", description=__doc__)
    add_monitor_args(parser)
    args = parser.parse_args(argv)

    def job() -> dict[str, Any]:
        settings = get_settings()
        init_ray(settings)
        return monitor_from_args(settings, args)

    return run_main(job)


if __name__ == "__main__":
    raise SystemExit(exiting(main()))
