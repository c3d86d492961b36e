"""The ``pumpfleet`` command: the front door above every part it drives (``ray_jobs``,
``serve_apps``, ``edge_export``), which never import it. Options shared with a job's
``python -m ray_jobs.<name>`` entry point come from ``pumpfleet.job_options``.

Bad input gets one line on stderr that says what was wrong and exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import NoReturn

from pydantic import ValidationError

from edge_export.cli import add_commands as add_edge_commands
from pumpfleet.entry import exiting
from pumpfleet.errors import PumpfleetError, one_line
from pumpfleet.job_options import (
    LOCAL_INGEST_MAX_ROWS,
    add_ingest_args,
    add_monitor_args,
    add_retrain_args,
    add_train_args,
    positive,
)
from pumpfleet.settings import get_settings, quiet_telemetry
from pumpfleet_cli import commands

log = logging.getLogger("pumpfleet")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line, not usage text plus a line."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _kind_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kind",
        choices=["rul", "anomaly"],
        default="rul",
        help="which model of the class: RUL (default) or the health (anomaly) model",
    )


def _version(text: str) -> str:
    number = text.removeprefix("v")
    if not number.isdigit() or int(number) < 1:
        raise argparse.ArgumentTypeError(f"--version must be like 3 or v3, got {text!r}")
    return str(int(number))


def _fleet_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("--pumps", type=positive("--pumps"), default=48)
    s.add_argument("--days", type=positive("--days"), default=60)
    s.add_argument("--seed", type=int, default=0)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="pumpfleet", description="Predictive maintenance for pump fleets on Ray.")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser("simulate", help="write a simulated fleet dataset")
    _fleet_args(s)
    s.add_argument("--interval-minutes", type=positive("--interval-minutes"), default=60)
    s.add_argument(
        "--inject",
        metavar="FILE",
        help="JSON file of faults and drifts to inject (see examples/faults.json)",
    )
    s.add_argument("--out", help="dataset folder or s3:// URI (default: workspace data)")
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=commands.cmd_simulate)

    s = sub.add_parser("ingest", help="Ray Data: validate, window, label → feature snapshot")
    add_ingest_args(s)
    s.add_argument(
        "--ray-data",
        action="store_true",
        help="Ray Data even on a local Ray for a small input (by itself, unless joined to a "
        f"cluster, ingest runs up to {LOCAL_INGEST_MAX_ROWS:,} input rows in this process)",
    )
    s.set_defaults(func=commands.cmd_ingest)

    s = sub.add_parser("import", help="map a public dataset into a fleet dataset")
    src = s.add_subparsers(dest="source", required=True, parser_class=_Parser)
    c = src.add_parser("cmapss", help="NASA C-MAPSS turbofan run-to-failure (FD001-FD004)")
    c.add_argument("--subset", default="FD001")
    c.add_argument(
        "--data-dir", help="folder of the C-MAPSS files (default: ../shared/data/cmapss)"
    )
    c.add_argument("--out", help="writes OUT/train and OUT/test (default: workspace datasets)")
    c.add_argument("--overwrite", action="store_true")
    c.set_defaults(func=commands.cmd_import)
    k = src.add_parser("skab", help="SKAB pump testbed with anomaly labels")
    k.add_argument("--data-dir", help="the SKAB folder (default: ../shared/data/skab)")
    k.add_argument("--out", help="dataset folder (default: workspace datasets/skab)")
    k.add_argument("--overwrite", action="store_true")
    k.set_defaults(func=commands.cmd_import)

    s = sub.add_parser("train", help="Ray Tune: one search per pump class, in parallel")
    add_train_args(s)
    _kind_arg(s)
    s.add_argument("--target-far", type=float, default=None, help="anomaly: false-alarm target")
    s.add_argument("--promote", action="store_true", help="anomaly: champion if no worse")
    s.set_defaults(func=commands.cmd_train)

    s = sub.add_parser("evaluate", help="challenger vs champion on the holdout; promote")
    s.add_argument("--snapshot", default="latest")
    s.set_defaults(func=commands.cmd_evaluate)

    s = sub.add_parser("promote", help="make a model version champion, through the gates")
    s.add_argument("--class", dest="pump_class", required=True, help="pump class")
    s.add_argument("--version", type=_version, required=True, help="model version, e.g. 3")
    s.add_argument("--force", action="store_true", help="skip the gates (needs --reason)")
    s.add_argument("--reason", help="why; recorded in the audit trail")
    s.add_argument("--snapshot", default="latest", help="feature snapshot the gates score on")
    _kind_arg(s)
    s.set_defaults(func=commands.cmd_promote)

    s = sub.add_parser("rollback", help="return the champion to the previous champion")
    s.add_argument("--class", dest="pump_class", required=True, help="pump class")
    s.add_argument("--reason", help="why; recorded in the audit trail")
    _kind_arg(s)
    s.set_defaults(func=commands.cmd_rollback)

    s = sub.add_parser("history", help="promotions, rollbacks and rejections: who, when, why")
    s.add_argument("--class", dest="pump_class", required=True, help="pump class")
    _kind_arg(s)
    s.set_defaults(func=commands.cmd_history)

    s = sub.add_parser("deploy", help="stage a model version: staging suite, then production")
    s.add_argument("--stage", choices=["staging", "production"], required=True)
    s.add_argument("--class", dest="pump_class", required=True, help="pump class")
    s.add_argument("--version", type=_version, required=True, help="model version, e.g. 3")
    s.add_argument("--url", default="http://127.0.0.1:8000", help="the running service")
    s.add_argument("--p99-budget-ms", type=float, default=100.0, help="staging latency budget")
    s.set_defaults(func=commands.cmd_deploy)

    s = sub.add_parser("ab", help="A/B and shadow tests: realised per-arm metrics")
    ab = s.add_subparsers(dest="ab_command", required=True)
    r = ab.add_parser("report", help="per-arm RMSE and MAE with 95% intervals, from feedback")
    r.add_argument("--class", dest="pump_class", help="one class (default: all)")
    r.add_argument("--since", help="only predictions from this time on (ISO date or time)")
    r.add_argument("--json", action="store_true", help="JSON instead of tables")
    r.set_defaults(func=commands.cmd_ab_report)

    s = sub.add_parser("export", help="ONNX of each champion into a signed edge bundle")
    s.add_argument("--out", help="bundle folder (default: workspace bundles)")
    s.set_defaults(func=commands.cmd_export)

    s = sub.add_parser("serve", help="Ray Serve scoring endpoint over HTTP")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=positive("--port"), default=8000)
    s.add_argument("--challenger-weight", type=float, default=0.2)
    s.add_argument(
        "--insecure-dev",
        action="store_true",
        help="serve without API keys (local development only)",
    )
    s.set_defaults(func=commands.cmd_serve)

    s = sub.add_parser("monitor", help="drift, estimated and realised performance; triggers")
    add_monitor_args(s)
    s.set_defaults(func=commands.cmd_monitor)

    s = sub.add_parser("retrain", help="ingest, train the given classes, evaluate with gates")
    add_retrain_args(s)
    s.add_argument("--jobs-address", help="submit to this Ray job server instead of running here")
    s.set_defaults(func=commands.cmd_retrain)

    s = sub.add_parser("schedule", help="retrain and/or monitor every N hours (local loop)")
    s.add_argument("--retrain-every-hours", type=float, default=None)
    s.add_argument("--monitor-every-hours", type=float, default=None)
    s.add_argument("--promote", action="store_true", help="scheduled retrains may promote")
    s.add_argument("--jobs-address", help="submit retrains to this Ray job server")
    s.add_argument("--tick-seconds", type=float, default=60.0)
    s.add_argument(
        "--iterations",
        type=positive("--iterations"),
        default=None,
        help="stop after this many ticks (default: run until Ctrl-C)",
    )
    s.set_defaults(func=commands.cmd_schedule)

    s = sub.add_parser("demo", help="the whole loop on a small simulated fleet")
    _fleet_args(s)
    s.add_argument("--port", type=positive("--port"), default=None)
    s.set_defaults(func=commands.cmd_demo)

    add_edge_commands(sub)
    return p


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname).1s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("alembic", "mlflow", "urllib3", "httpx", "filelock", "ray.tune"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _configure_logging(args.verbose)
    try:
        settings = get_settings()
        quiet_telemetry(settings)
        args.func(args, settings)
    except (PumpfleetError, FileNotFoundError) as e:
        print(f"pumpfleet {args.command}: error: {e}", file=sys.stderr)
        return 2
    except ValidationError as e:
        print(f"pumpfleet {args.command}: error: {one_line(e)}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:
        print(
            f"pumpfleet {args.command}: error: {e.name} is not installed; "
            "install pumpfleet[cloud] for this command",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


# The exit status of a program the pipe's reader left (128 + SIGPIPE), as a shell reports
# `yes | head`.
BROKEN_PIPE = 141


def run() -> int:
    """The ``pumpfleet`` program: :func:`main`, then the exit without its collections
    (:func:`pumpfleet.entry.exiting`). Tests call :func:`main`.

    A reader that stops early (`pumpfleet history --class esp | head -3`) ends the
    program quietly with :data:`BROKEN_PIPE`, not with a traceback."""
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        # What is left in stdout's buffer would fail again as the interpreter exits.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = BROKEN_PIPE
    return exiting(code)


if __name__ == "__main__":
    raise SystemExit(run())
