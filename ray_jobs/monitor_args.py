"""The monitor's command-line options, shared by ``python -m ray_jobs.monitor`` and
``pumpfleet monitor`` (argparse only: building the CLI's parser must not import Ray)."""

from __future__ import annotations

import argparse


def add_monitor_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--snapshot", default="latest")
    p.add_argument("--chunk-size", type=int, default=50)
    p.add_argument(
        "--std-multiplier",
        type=float,
        default=None,
        help="drift alerts above the reference chunks' mean + this many sd",
    )
    p.add_argument(
        "--min-alert-chunks",
        "--consecutive",
        dest="consecutive",
        type=int,
        default=2,
        help="drifted chunks in a row that raise an alert (clean ones clear it)",
    )
    p.add_argument(
        "--cooldown-hours",
        type=float,
        default=24.0,
        help="least time between two retrains of one class",
    )
    p.add_argument(
        "--new-data-rows",
        type=int,
        default=None,
        help="retrain every class once this many rows arrived since the snapshot",
    )
    p.add_argument(
        "--jobs-address",
        default=None,
        help="Ray job server to submit retraining to (default: PUMPFLEET_JOBS_ADDRESS)",
    )
    p.add_argument("--no-trigger", action="store_true", help="report only; never retrain")
