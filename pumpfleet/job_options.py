"""Each job's command-line options, defined once: ``pumpfleet <job>``, ``python -m
ray_jobs.<job>`` and whatever submits the job to a Ray job server (the monitor, the
scheduler, ``POST /v1/admin/retrain``) all build their parsers and argument lists here.

argparse and pydantic only: building the CLI's parser must not import Ray.
"""

from __future__ import annotations

import argparse
import secrets
import shlex
import time
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pumpfleet.alerts import AlertPolicy
from pumpfleet.errors import InputError, one_line
from pumpfleet.windows import WindowConfig


def positive(name: str) -> Callable[[str], int]:
    """An argparse type: an integer of at least 1, or a message naming the flag."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {text!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{name} must be at least 1, got {value}")
        return value

    return parse


def fraction(name: str) -> Callable[[str], float]:
    """An argparse type: a number in [0, 0.5)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got {text!r}") from None
        if not 0 <= value < 0.5:
            raise argparse.ArgumentTypeError(f"{name} must be in [0, 0.5), got {value}")
        return value

    return parse


def weight(text: str) -> float:
    """An argparse type for ``--ab-weight``: a number in [0, 1]."""
    try:
        w = float(text)
    except ValueError:
        w = float("nan")
    if not 0.0 <= w <= 1.0:
        raise argparse.ArgumentTypeError(f"--ab-weight must be between 0 and 1, got {text!r}")
    return w


# --- ingest ---------------------------------------------------------------------------


# Up to this many input rows, `pumpfleet ingest` on a local Ray (not joined to a
# cluster) runs in its own process (pumpfleet.ingestion.in_process): the single process
# ingests about 600,000 rows a second on one core, so 2M rows take a few seconds, less
# than Ray and Ray Data take to start; on this project's 2-core machine Ray Data did not
# beat it at any size measured (0.95x at 10M rows, docs/benchmarks.md#ingest).
LOCAL_INGEST_MAX_ROWS = 2_000_000


def add_ingest_args(p: argparse.ArgumentParser) -> None:
    """``pumpfleet ingest`` and ``python -m ray_jobs.ingest``; defaults from WindowConfig."""
    d = WindowConfig()
    p.add_argument("--source", help="fleet dataset (default: workspace data)")
    p.add_argument("--out", help="features folder (default: workspace features)")
    p.add_argument("--window", type=positive("--window"), default=d.window)
    p.add_argument("--stride", type=positive("--stride"), default=d.stride)
    p.add_argument(
        "--rul-cap-hours", type=float, default=d.rul_cap_hours, help="cap of the RUL label"
    )
    p.add_argument(
        "--horizon-hours", type=float, default=d.horizon_hours, help="failure-within horizon"
    )
    p.add_argument(
        "--future-fraction",
        type=fraction("--future-fraction"),
        default=d.future_fraction,
        help="share of the time span, at its end, held out as split 'future' (0: none)",
    )
    p.add_argument(
        "--no-regimes",
        action="store_true",
        help="normalise per class only, not per operating regime",
    )
    p.add_argument(
        "--single-process",
        action="store_true",
        help="no Ray: the same functions in this process, block after block (the faster "
        "on one machine; see docs/benchmarks.md#ingest)",
    )


def window_config(args: argparse.Namespace) -> WindowConfig:
    """The WindowConfig the ingest options describe."""
    return WindowConfig(
        window=args.window,
        stride=args.stride,
        rul_cap_hours=args.rul_cap_hours,
        horizon_hours=args.horizon_hours,
        future_fraction=args.future_fraction,
        regimes=not args.no_regimes,
    )


# --- train ----------------------------------------------------------------------------


def add_train_args(p: argparse.ArgumentParser) -> None:
    """``pumpfleet train`` and ``python -m ray_jobs.train`` (the CLI adds --kind)."""
    p.add_argument("--snapshot", default="latest")
    p.add_argument("--config", help="search space, YAML or JSON (default: built in)")
    p.add_argument("--epochs", type=positive("--epochs"), default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--classes", nargs="+", default=None, help="only these pump classes")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--resume", action="store_true", help="finish the last experiment")
    how.add_argument("--reproduce", metavar="RUN_ID", help="retrain a recorded trial, compare")


# --- monitor --------------------------------------------------------------------------

# The cluster manifests pass it, and the monitor's summary names it when it is missing.
JOBS_ADDRESS_OPTION = "--jobs-address"


def add_monitor_args(p: argparse.ArgumentParser) -> None:
    """``pumpfleet monitor`` and ``python -m ray_jobs.monitor``."""
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
        JOBS_ADDRESS_OPTION,
        default=None,
        help="Ray job server to submit retraining to (default: PUMPFLEET_JOBS_ADDRESS)",
    )
    p.add_argument("--no-trigger", action="store_true", help="report only; never retrain")
    p.add_argument(
        "--daily-fleet",
        action="store_true",
        help="add each class's daily fleet signals (per-pump residuals in time order: class "
        "shift, one site's shift, new operating settings) to its report",
    )


def alert_policy(args: argparse.Namespace) -> AlertPolicy:
    """The AlertPolicy the monitor options describe."""
    return AlertPolicy(
        consecutive=args.consecutive,
        clear_after=args.consecutive,
        cooldown_hours=args.cooldown_hours,
        new_data_rows=args.new_data_rows,
    )


# --- retrain --------------------------------------------------------------------------

RETRAIN_ENTRYPOINT = "python -m ray_jobs.retrain"
RETRAIN_JOB_PREFIX = "pumpfleet-retrain-"


class RetrainOptions(BaseModel):
    """What a retrain is asked to do, wherever it runs: parsed from the command line,
    written back to one when the job is submitted to a job server, and echoed in the
    job's summary so that the submitter can see what arrived."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    classes: list[str] | None = None
    reason: str = Field(default="requested", max_length=2000)
    source: str | None = None
    config: str | None = None
    epochs: int | None = Field(default=None, ge=1)
    seed: int | None = None
    promote: bool = False
    no_health: bool = False
    ab_weight: float | None = Field(default=None, ge=0.0, le=1.0)
    shadow: bool | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RetrainOptions:
        """From a namespace :func:`add_retrain_args` filled; a bad value is an InputError."""
        if args.classes is not None and not all(args.classes):
            raise InputError("--classes: empty class name")
        try:
            return cls(**{name: getattr(args, name) for name in cls.model_fields})
        except ValidationError as e:
            raise InputError(one_line(e)) from None

    def to_argv(self) -> list[str]:
        """The command-line arguments that parse back to these options."""
        argv = ["--reason", self.reason]
        if self.classes:
            argv += ["--classes", *self.classes]
        for flag, value in (
            ("--source", self.source),
            ("--config", self.config),
            ("--epochs", self.epochs),
            ("--seed", self.seed),
            ("--ab-weight", self.ab_weight),
        ):
            if value is not None:
                argv += [flag, str(value)]
        argv += [f for f, on in (("--promote", self.promote), ("--no-health", self.no_health))
                 if on]  # fmt: skip
        if self.shadow:
            argv.append("--shadow")
        return argv

    def entrypoint(self) -> str:
        """The shell command a Ray job server runs for these options."""
        return " ".join([RETRAIN_ENTRYPOINT, *(shlex.quote(a) for a in self.to_argv())])


def add_retrain_args(p: argparse.ArgumentParser) -> None:
    """``pumpfleet retrain`` and ``python -m ray_jobs.retrain``: one field of
    :class:`RetrainOptions` per flag."""
    p.add_argument("--classes", nargs="+", default=None, help="only these classes")
    p.add_argument("--reason", default="requested", help="why (recorded with the run)")
    p.add_argument(
        "--source",
        default=None,
        help="fleet dataset (default: the one the champions' snapshot was ingested from)",
    )
    p.add_argument("--config", help="search space, YAML or JSON (see SearchSpace)")
    p.add_argument("--epochs", type=positive("--epochs"), default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--promote", action="store_true", help="promote if the gates pass")
    p.add_argument("--no-health", action="store_true", help="leave the health models alone")
    p.add_argument(
        "--ab-weight", type=weight, default=None, help="start an A/B test of new challengers"
    )
    p.add_argument("--shadow", action="store_true", default=None, help="or a shadow test")


def retrain_submission(
    options: RetrainOptions, runtime_env: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What a retrain with ``options`` is submitted to a Ray job server with: the keyword
    arguments of ``JobSubmissionClient.submit_job`` (the parts call it; the core does no
    HTTP). The job's runtime environment carries the submitter's git commit, which the job
    records."""
    from pumpfleet.lineage import submission_env

    env = {**submission_env(), **(runtime_env or {}).get("env_vars", {})}
    runtime_env = {**(runtime_env or {}), "env_vars": env} if env else runtime_env
    return {
        "entrypoint": options.entrypoint(),
        "submission_id": f"{RETRAIN_JOB_PREFIX}{time.strftime('%Y%m%d-%H%M%S')}-"
        f"{secrets.token_hex(3)}",
        "runtime_env": runtime_env,
        # the monitor reads the classes back to keep one running job per class
        "metadata": {
            "pumpfleet": "retrain",
            "reason": options.reason[:200],
            "classes": ",".join(options.classes or []),
        },
    }


def auth_headers(token: str | None) -> dict[str, str] | None:
    """The headers of a Ray job server with token authentication on (None: off)."""
    return {"Authorization": f"Bearer {token}"} if token else None
