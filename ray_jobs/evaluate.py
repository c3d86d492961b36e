"""Offline A/B: challenger against champion on the same holdout, per class and per slice,
gated and (if the gates pass) promoted. No Ray: the steps are ``pumpfleet.evaluation_run``.

    python -m ray_jobs.evaluate [--snapshot ID]
"""

from __future__ import annotations

import argparse

from pumpfleet.entry import exiting, run_main
from pumpfleet.evaluation_run import run_evaluate
from pumpfleet.settings import get_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ray_jobs.evaluate", description=__doc__)
    parser.add_argument("--snapshot", default="latest")
    args = parser.parse_args(argv)
    return run_main(lambda: run_evaluate(get_settings(), args.snapshot))


if __name__ == "__main__":
    raise SystemExit(exiting(main()))
