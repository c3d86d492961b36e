"""The ``pumpfleet`` command. Each step calls a Ray job / Serve / export entry point.

Bad input gets one line on stderr that says what was wrong and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from pydantic import ValidationError

from pumpfleet.errors import InputError, PumpfleetError, one_line
from pumpfleet.settings import Settings, get_settings, quiet_telemetry

log = logging.getLogger("pumpfleet")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line, not usage text plus a line."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _positive(name: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {text!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{name} must be at least 1, got {value}")
        return value

    return parse


def _fraction(name: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got {text!r}") from None
        if not 0 <= value < 0.5:
            raise argparse.ArgumentTypeError(f"{name} must be in [0, 0.5), got {value}")
        return value

    return parse


def _existing(path: str, what: str) -> str:
    from pumpfleet import storage

    if not storage.exists(path):
        raise InputError(f"{what} {path}: no such file or folder")
    return path


PARTIAL = 3  # the job finished but set some input aside (e.g. unreadable files)


def _entry(module: str, *names: str) -> list[Any]:
    """Names from a Ray entry point (``ray_jobs``, ``serve_apps``), imported when a command
    runs: this module is the pure core's CLI, and Ray loads only for the commands that
    use it."""
    loaded = importlib.import_module(module)
    return [getattr(loaded, n) for n in names]


def _print(result: Any) -> int:
    """Print a job's JSON summary; its exit code (PARTIAL if it says so)."""
    print(json.dumps(result, indent=2, default=str))
    partial = isinstance(result, dict) and result.get("status") == "partial"
    return PARTIAL if partial else 0


def cmd_simulate(args: argparse.Namespace, settings: Settings) -> None:
    from pumpfleet.faults import Injection
    from pumpfleet.simulator import SimulationConfig, simulate

    injection = Injection()
    if args.inject:
        path = Path(_existing(args.inject, "--inject"))
        try:
            injection = Injection.model_validate_json(path.read_text())
        except ValidationError as e:
            raise InputError(f"--inject {path}: {one_line(e)}") from None
    cfg = SimulationConfig(
        pumps=args.pumps,
        days=args.days,
        seed=args.seed,
        interval_minutes=args.interval_minutes,
        faults=injection.faults,
        drifts=injection.drifts,
    )
    _print(simulate(cfg, args.out or str(settings.data_dir), overwrite=args.overwrite))


def shared_data_dir() -> Path:
    """``../shared/data`` beside the project's checkout (where the public data lives)."""
    return Path(__file__).resolve().parents[2] / "shared" / "data"


def cmd_import(args: argparse.Namespace, settings: Settings) -> None:
    if args.source == "cmapss":
        from pumpfleet.adapters.cmapss import import_cmapss

        data_dir = Path(args.data_dir) if args.data_dir else shared_data_dir() / "cmapss"
        out = args.out or str(settings.home / "datasets" / f"cmapss-{args.subset.lower()}")
        _print(import_cmapss(args.subset, data_dir, out, overwrite=args.overwrite) | {"out": out})
    else:
        from pumpfleet.adapters.skab import import_skab

        data_dir = Path(args.data_dir) if args.data_dir else shared_data_dir() / "skab"
        out = args.out or str(settings.home / "datasets" / "skab")
        _print(import_skab(data_dir, out, overwrite=args.overwrite) | {"out": out})


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> None:
    from pumpfleet.windows import WindowConfig

    init_ray = _entry("ray_jobs._ray", "init_ray")[0]
    ingest_and_log = _entry("ray_jobs.ingest", "ingest_and_log")[0]

    source = _existing(args.source or str(settings.data_dir), "--source")
    cfg = WindowConfig(
        window=args.window,
        stride=args.stride,
        rul_cap_hours=args.rul_cap_hours,
        horizon_hours=args.horizon_hours,
        future_fraction=args.future_fraction,
        regimes=not args.no_regimes,
    )
    init_ray(settings)
    code = _print(ingest_and_log(settings, source, args.out or str(settings.features_dir), cfg))
    if code:
        raise SystemExit(code)


def cmd_train(args: argparse.Namespace, settings: Settings) -> None:
    init_ray = _entry("ray_jobs._ray", "init_ray")[0]
    reproduce, resume_train, run_train, space_from_args = _entry(
        "ray_jobs.train", "reproduce", "resume_train", "run_train", "space_from_args"
    )

    if args.kind == "anomaly":
        _train_anomaly(args, settings)
        return
    if args.promote:
        raise InputError("--promote is for --kind anomaly; RUL models go through `evaluate`")
    space = space_from_args(args)  # a bad search space fails before Ray starts
    init_ray(settings)
    if args.resume:
        _print(resume_train(settings))
    elif args.reproduce:
        _print(reproduce(settings, args.reproduce))
    else:
        _print(run_train(settings, args.snapshot, space, args.classes))


def _train_anomaly(args: argparse.Namespace, settings: Settings) -> None:
    init_ray = _entry("ray_jobs._ray", "init_ray")[0]
    space_cls, run = _entry("ray_jobs.train_anomaly", "AnomalySearchSpace", "run_train_anomaly")
    for flag, given in (("--config", args.config), ("--resume", args.resume)):
        if given:
            raise InputError(f"{flag} is for --kind rul; anomaly models take --target-far")
    if args.reproduce:
        raise InputError("--reproduce is for --kind rul; anomaly models take --target-far")
    overrides = {
        k: v
        for k, v in (("epochs", args.epochs), ("seed", args.seed), ("target_far", args.target_far))
        if v is not None
    }
    space = space_cls(**overrides)  # a bad value fails before Ray starts
    init_ray(settings)
    _print(run(settings, args.snapshot, space, args.classes, args.promote))


def cmd_evaluate(args: argparse.Namespace, settings: Settings) -> None:
    run_evaluate = _entry("ray_jobs.evaluate", "run_evaluate")[0]

    _print(run_evaluate(settings, args.snapshot))


def _weight(text: str) -> float:
    try:
        w = float(text)
    except ValueError:
        w = float("nan")
    if not 0.0 <= w <= 1.0:
        raise argparse.ArgumentTypeError(f"--ab-weight must be between 0 and 1, got {text!r}")
    return w


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


def cmd_promote(args: argparse.Namespace, settings: Settings) -> None:
    if args.force and not (args.reason or "").strip():
        raise InputError("--force needs --reason: say why the gates are overridden")
    if args.kind == "anomaly":
        _promote_anomaly(args, settings)
        return
    promote_version = _entry("ray_jobs.evaluate", "promote_version")[0]

    r = promote_version(
        settings,
        args.pump_class,
        args.version,
        force=args.force,
        reason=args.reason,
        snapshot=args.snapshot,
    )
    for line in r["reasons"]:
        print(line)
    if not r["promoted"]:
        failed = sum(line.startswith("FAIL") for line in r["reasons"])
        raise InputError(
            f"{args.pump_class} v{args.version} not promoted: {failed} gate(s) failed; "
            "--force --reason TEXT overrides the gates"
        )
    before = f"v{r['champion_before']}" if r["champion_before"] else "none"
    forced = f" (forced: {args.reason})" if r["forced"] else ""
    print(f"{args.pump_class}: v{args.version} is champion, was {before}{forced}")


def _promote_anomaly(args: argparse.Namespace, settings: Settings) -> None:
    """An anomaly model version was gated when it was registered (only a model that
    passed is registered); a version once rolled back needs --force."""
    from pumpfleet import lifecycle
    from pumpfleet.registry import Registry, anomaly_model_name

    registry = Registry(settings.tracking_uri, settings.artifact_root)
    name = lifecycle.check_class(registry, args.pump_class, "anomaly")
    tags = registry.version_tags(name, args.version)
    back = lifecycle.rolled_back(tags)
    if back and not args.force:
        raise InputError(f"{name} v{args.version} was {back}; --force --reason TEXT overrides")
    record = lifecycle.promote(
        registry,
        args.pump_class,
        args.version,
        who=lifecycle.current_user(),
        why=args.reason or f"manual promotion (gate at registration: {tags.get('gate', '?')})",
        now=lifecycle.utc_now(),
        forced=args.force,
        kind="anomaly",
    )
    was = f"v{record.previous}" if record.previous else "none"
    print(f"{anomaly_model_name(args.pump_class)}: v{args.version} is champion, was {was}")


def cmd_rollback(args: argparse.Namespace, settings: Settings) -> None:
    from pumpfleet import lifecycle
    from pumpfleet.registry import Registry

    record = lifecycle.rollback(
        Registry(settings.tracking_uri, settings.artifact_root),
        args.pump_class,
        who=lifecycle.current_user(),
        why=args.reason or "manual rollback (no reason given)",
        now=lifecycle.utc_now(),
        kind=args.kind,
    )
    was = f"v{record.previous}" if record.previous else "none"
    print(f"{args.pump_class}: champion rolled back to v{record.version}, was {was}")


def cmd_history(args: argparse.Namespace, settings: Settings) -> None:
    from pumpfleet import lifecycle
    from pumpfleet.registry import Registry, kind_model_name

    registry = Registry(settings.tracking_uri, settings.artifact_root)
    records = lifecycle.history(registry, args.pump_class, args.kind)
    name = kind_model_name(args.pump_class, args.kind)
    print(name)
    print(lifecycle.format_history(records, registry.aliases(name)))


def cmd_deploy(args: argparse.Namespace, settings: Settings) -> None:
    Suite, deploy = _entry("serve_apps.deploy", "Suite", "deploy")

    suite = Suite(p99_budget_ms=args.p99_budget_ms)
    _print(deploy(settings, args.url, args.pump_class, args.version, args.stage, suite=suite))


def cmd_ab_report(args: argparse.Namespace, settings: Settings) -> None:
    import pandas as pd

    from pumpfleet.abreport import arm_reports, format_report
    from pumpfleet.predlog import read_log

    log = read_log(str(settings.predictions_dir))
    feedback = read_log(f"{str(settings.predictions_dir).rstrip('/')}-feedback")
    if args.pump_class and not log.empty:
        log = log[log["pump_class"] == args.pump_class]
    if args.since and not log.empty:
        try:
            since = pd.Timestamp(args.since, tz="UTC")
        except ValueError:
            raise InputError(f"--since: not a date or time: {args.since!r}") from None
        log = log[pd.to_datetime(log["timestamp"], utc=True) >= since]
    reports, diffs = arm_reports(log, feedback)
    if args.json:
        _print({"arms": [r.__dict__ for r in reports], "differences": [d.__dict__ for d in diffs]})
    else:
        print(format_report(reports, diffs))


def cmd_export(args: argparse.Namespace, settings: Settings) -> None:
    from edge_export.export import run_export

    _print(run_export(settings, args.out))


def cmd_serve(args: argparse.Namespace, settings: Settings) -> None:
    init_ray = _entry("ray_jobs._ray", "init_ray")[0]
    serve_run = importlib.import_module("serve_apps.run")

    if not 0.0 <= args.challenger_weight <= 1.0:
        raise InputError(f"--challenger-weight must be in [0, 1], got {args.challenger_weight}")
    serve_run.use_serve_env()
    init_ray(settings)
    url = serve_run.start(
        settings, args.port, args.challenger_weight, args.host, insecure_dev=args.insecure_dev
    )
    print(f"scoring service at {url}/v1/score (docs at {url}/docs); Ctrl-C stops it", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        serve_run.stop()


def cmd_monitor(args: argparse.Namespace, settings: Settings) -> None:
    init_ray = _entry("ray_jobs._ray", "init_ray")[0]
    monitor_from_args = _entry("ray_jobs.monitor", "monitor_from_args")[0]

    init_ray(settings)
    result = monitor_from_args(settings, args)
    _print(
        {k: v for k, v in result.items() if k != "classes"}
        | {
            "classes": {
                c: {
                    k: r[k]
                    for k in ("alert_active", "drifted_features", "detected_at_chunk", "chunks")
                }
                | {"estimated": r["estimated"], "realised": r["realised"]}
                for c, r in result["classes"].items()
            }
        }
    )


def cmd_retrain(args: argparse.Namespace, settings: Settings) -> None:
    if args.jobs_address:
        submit_retrain = _entry("ray_jobs.retrain", "submit_retrain")[0]

        job = submit_retrain(args.jobs_address, args.classes, args.reason, args.epochs)
        _print({"submitted": job, "classes": args.classes, "reason": args.reason})
        return
    init_ray = _entry("ray_jobs._ray", "init_ray")[0]
    retrain_from_args = _entry("ray_jobs.retrain", "retrain_from_args")[0]

    init_ray(settings)
    _print(retrain_from_args(settings, args))


def cmd_schedule(args: argparse.Namespace, settings: Settings) -> None:
    run_schedule = _entry("ray_jobs.schedule", "run_schedule")[0]

    def retrain() -> None:
        if args.jobs_address:
            submit_retrain = _entry("ray_jobs.retrain", "submit_retrain")[0]

            print(f"submitted {submit_retrain(args.jobs_address, None, 'scheduled')}", flush=True)
            return
        init_ray = _entry("ray_jobs._ray", "init_ray")[0]
        run_retrain = _entry("ray_jobs.retrain", "run_retrain")[0]

        init_ray(settings)
        _print(run_retrain(settings, reason="scheduled", promote=args.promote))

    def monitor() -> None:
        init_ray = _entry("ray_jobs._ray", "init_ray")[0]
        run_monitor = _entry("ray_jobs.monitor", "run_monitor")[0]

        init_ray(settings)
        r = run_monitor(settings, address=args.jobs_address)
        print(f"monitor: alerting {r['alerting_classes'] or 'none'}; {r['report']}", flush=True)

    every = {}
    if args.retrain_every_hours:
        every["retrain"] = args.retrain_every_hours
    if args.monitor_every_hours:
        every["monitor"] = args.monitor_every_hours
    if not every:
        raise InputError("give --retrain-every-hours and/or --monitor-every-hours")
    tasks = {"retrain": retrain, "monitor": monitor}
    _print(run_schedule(settings, every, tasks, args.iterations, args.tick_seconds))


def cmd_demo(args: argparse.Namespace, settings: Settings) -> None:
    DemoConfig, run_demo, shutdown, summary_text = _entry(
        "ray_jobs.demo", "DemoConfig", "run_demo", "shutdown", "summary_text"
    )

    cfg = DemoConfig(pumps=args.pumps, days=args.days, seed=args.seed, port=args.port)
    try:
        result = run_demo(settings, cfg)
    finally:
        shutdown()
    print(summary_text(result))


def _fleet_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("--pumps", type=_positive("--pumps"), default=48)
    s.add_argument("--days", type=_positive("--days"), default=60)
    s.add_argument("--seed", type=int, default=0)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="pumpfleet", description="Predictive maintenance for pump fleets on Ray.")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser("simulate", help="write a simulated fleet dataset")
    _fleet_args(s)
    s.add_argument("--interval-minutes", type=_positive("--interval-minutes"), default=60)
    s.add_argument(
        "--inject",
        metavar="FILE",
        help="JSON file of faults and drifts to inject (see examples/faults.json)",
    )
    s.add_argument("--out", help="dataset folder or s3:// URI (default: workspace data)")
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=cmd_simulate)

    s = sub.add_parser("ingest", help="Ray Data: validate, window, label → feature snapshot")
    s.add_argument("--source", help="fleet dataset (default: workspace data)")
    s.add_argument("--out", help="features folder (default: workspace features)")
    s.add_argument("--window", type=_positive("--window"), default=24)
    s.add_argument("--stride", type=_positive("--stride"), default=4)
    s.add_argument("--rul-cap-hours", type=float, default=168.0, help="cap of the RUL label")
    s.add_argument("--horizon-hours", type=float, default=48.0, help="failure-within horizon")
    s.add_argument(
        "--future-fraction",
        type=_fraction("--future-fraction"),
        default=0.1,
        help="share of the time span, at its end, held out as split 'future' (0: none)",
    )
    s.add_argument(
        "--no-regimes",
        action="store_true",
        help="normalise per class only, not per operating regime",
    )
    s.set_defaults(func=cmd_ingest)

    s = sub.add_parser("import", help="map a public dataset into a fleet dataset")
    src = s.add_subparsers(dest="source", required=True, parser_class=_Parser)
    c = src.add_parser("cmapss", help="NASA C-MAPSS turbofan run-to-failure (FD001-FD004)")
    c.add_argument("--subset", default="FD001")
    c.add_argument(
        "--data-dir", help="folder of the C-MAPSS files (default: ../shared/data/cmapss)"
    )
    c.add_argument("--out", help="writes OUT/train and OUT/test (default: workspace datasets)")
    c.add_argument("--overwrite", action="store_true")
    c.set_defaults(func=cmd_import)
    k = src.add_parser("skab", help="SKAB pump testbed with anomaly labels")
    k.add_argument("--data-dir", help="the SKAB folder (default: ../shared/data/skab)")
    k.add_argument("--out", help="dataset folder (default: workspace datasets/skab)")
    k.add_argument("--overwrite", action="store_true")
    k.set_defaults(func=cmd_import)

    s = sub.add_parser("train", help="Ray Tune: one search per pump class, in parallel")
    s.add_argument("--snapshot", default="latest")
    s.add_argument("--config", help="search space, YAML or JSON (default: built in)")
    s.add_argument("--epochs", type=_positive("--epochs"), default=None)
    s.add_argument("--seed", type=int, default=None)
    s.add_argument("--classes", nargs="+", default=None, help="only these pump classes")
    _kind_arg(s)
    s.add_argument("--target-far", type=float, default=None, help="anomaly: false-alarm target")
    s.add_argument("--promote", action="store_true", help="anomaly: champion if no worse")
    how = s.add_mutually_exclusive_group()
    how.add_argument("--resume", action="store_true", help="finish the last experiment")
    how.add_argument("--reproduce", metavar="RUN_ID", help="retrain a recorded trial, compare")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("evaluate", help="challenger vs champion on the holdout; promote")
    s.add_argument("--snapshot", default="latest")
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("promote", help="make a model version champion, through the gates")
    s.add_argument("--class", dest="pump_class", required=True, help="pump class")
    s.add_argument("--version", type=_version, required=True, help="model version, e.g. 3")
    s.add_argument("--force", action="store_true", help="skip the gates (needs --reason)")
    s.add_argument("--reason", help="why; recorded in the audit trail")
    s.add_argument("--snapshot", default="latest", help="feature snapshot the gates score on")
    _kind_arg(s)
    s.set_defaults(func=cmd_promote)

    s = sub.add_parser("rollback", help="return the champion to the previous champion")
    s.add_argument("--class", dest="pump_class", required=True, help="pump class")
    s.add_argument("--reason", help="why; recorded in the audit trail")
    _kind_arg(s)
    s.set_defaults(func=cmd_rollback)

    s = sub.add_parser("history", help="promotions, rollbacks and rejections: who, when, why")
    s.add_argument("--class", dest="pump_class", required=True, help="pump class")
    _kind_arg(s)
    s.set_defaults(func=cmd_history)

    s = sub.add_parser("deploy", help="stage a model version: staging suite, then production")
    s.add_argument("--stage", choices=["staging", "production"], required=True)
    s.add_argument("--class", dest="pump_class", required=True, help="pump class")
    s.add_argument("--version", type=_version, required=True, help="model version, e.g. 3")
    s.add_argument("--url", default="http://127.0.0.1:8000", help="the running service")
    s.add_argument("--p99-budget-ms", type=float, default=100.0, help="staging latency budget")
    s.set_defaults(func=cmd_deploy)

    s = sub.add_parser("ab", help="A/B and shadow tests: realised per-arm metrics")
    ab = s.add_subparsers(dest="ab_command", required=True)
    r = ab.add_parser("report", help="per-arm RMSE and MAE with 95% intervals, from feedback")
    r.add_argument("--class", dest="pump_class", help="one class (default: all)")
    r.add_argument("--since", help="only predictions from this time on (ISO date or time)")
    r.add_argument("--json", action="store_true", help="JSON instead of tables")
    r.set_defaults(func=cmd_ab_report)

    s = sub.add_parser("export", help="ONNX of each champion into a signed edge bundle")
    s.add_argument("--out", help="bundle folder (default: workspace bundles)")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("serve", help="Ray Serve scoring endpoint over HTTP")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=_positive("--port"), default=8000)
    s.add_argument("--challenger-weight", type=float, default=0.2)
    s.add_argument(
        "--insecure-dev",
        action="store_true",
        help="serve without API keys (local development only)",
    )
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("monitor", help="drift, estimated and realised performance; triggers")
    add_monitor_args = _entry("ray_jobs.monitor_args", "add_monitor_args")[0]

    add_monitor_args(s)
    s.set_defaults(func=cmd_monitor)

    s = sub.add_parser("retrain", help="ingest, train the given classes, evaluate with gates")
    s.add_argument("--classes", nargs="+", default=None, help="only these classes")
    s.add_argument("--reason", default="requested")
    s.add_argument("--source", default=None, help="fleet dataset (default: workspace)")
    s.add_argument("--config", help="search space, YAML or JSON")
    s.add_argument("--epochs", type=_positive("--epochs"), default=None)
    s.add_argument("--seed", type=int, default=None)
    s.add_argument("--promote", action="store_true", help="promote if the gates pass")
    s.add_argument("--no-health", action="store_true", help="leave the health models alone")
    s.add_argument(
        "--ab-weight", type=_weight, default=None, help="start an A/B test of new challengers"
    )
    s.add_argument("--shadow", action="store_true", default=None, help="or a shadow test")
    s.add_argument("--jobs-address", help="submit to this Ray job server instead of running here")
    s.set_defaults(func=cmd_retrain)

    s = sub.add_parser("schedule", help="retrain and/or monitor every N hours (local loop)")
    s.add_argument("--retrain-every-hours", type=float, default=None)
    s.add_argument("--monitor-every-hours", type=float, default=None)
    s.add_argument("--promote", action="store_true", help="scheduled retrains may promote")
    s.add_argument("--jobs-address", help="submit retrains to this Ray job server")
    s.add_argument("--tick-seconds", type=float, default=60.0)
    s.add_argument(
        "--iterations",
        type=_positive("--iterations"),
        default=None,
        help="stop after this many ticks (default: run until Ctrl-C)",
    )
    s.set_defaults(func=cmd_schedule)

    s = sub.add_parser("demo", help="the whole loop on a small simulated fleet")
    _fleet_args(s)
    s.add_argument("--port", type=_positive("--port"), default=None)
    s.set_defaults(func=cmd_demo)

    from edge_export.cli import add_commands

    add_commands(sub)
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
        os.environ.setdefault("PUMPFLEET_HOME", str(settings.home))
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


if __name__ == "__main__":
    raise SystemExit(main())
