"""What each ``pumpfleet`` subcommand does: check the options, call the job, Serve or
export entry point below, print its summary. Ray is imported only by the commands that
use it (inside the function), so ``pumpfleet --help`` and the edge commands start fast.
"""

from __future__ import annotations

import argparse
import logging
import signal
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pumpfleet import jsontext
from pumpfleet.adapters import shared_data_dir
from pumpfleet.errors import InputError, one_line
from pumpfleet.job_options import LOCAL_INGEST_MAX_ROWS, RetrainOptions, window_config
from pumpfleet.settings import Settings

log = logging.getLogger(__name__)

PARTIAL = 3  # the job finished but set some input aside (e.g. unreadable files)


def _existing(path: str, what: str) -> str:
    from pumpfleet import storage

    if not storage.exists(path):
        raise InputError(f"{what} {path}: no such file or folder")
    return path


def _print(result: Any) -> int:
    """Print a job's JSON summary; its exit code (PARTIAL if it says so)."""
    print(jsontext.dumps(result, indent=2))
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
    _print(simulate(cfg, args.out or settings.data_uri, overwrite=args.overwrite))


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
    from pumpfleet.ingestion import in_process, plan_ingest
    from ray_jobs._ray import init_ray
    from ray_jobs.ingest import ingest_and_log

    if args.single_process and args.ray_data:
        raise InputError("--single-process and --ray-data: choose one")
    source = _existing(args.source or settings.data_uri, "--source")
    cfg = window_config(args)
    out = args.out or settings.features_uri
    # A snapshot that exists already needs no Ray: said so without starting it.
    plan = plan_ingest(source, out, cfg)
    local = args.single_process or in_process(plan, settings.ray_address, args.ray_data)
    if plan.up_to_date is None:
        if local:
            log.info(
                "%s rows: ingesting in this process, not on Ray Data (by itself up to %s rows "
                "on a local Ray; --ray-data for Ray Data)",
                f"{plan.rows_in:,}",
                f"{LOCAL_INGEST_MAX_ROWS:,}",
            )
        else:
            init_ray(settings)
    summary = plan.up_to_date or ingest_and_log(
        settings, source, out, cfg, single_process=local, plan=plan
    )
    code = _print(summary)
    if code:
        raise SystemExit(code)


def cmd_train(args: argparse.Namespace, settings: Settings) -> None:
    from pumpfleet.reproduction import reproduce
    from pumpfleet.search_space import space_from_args
    from ray_jobs._ray import init_ray
    from ray_jobs.train import resume_train, run_train

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
    from pumpfleet.search_space import AnomalySearchSpace
    from ray_jobs._ray import init_ray
    from ray_jobs.train_anomaly import run_train_anomaly

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
    space = AnomalySearchSpace(**overrides)  # a bad value fails before Ray starts
    init_ray(settings)
    _print(run_train_anomaly(settings, args.snapshot, space, args.classes, args.promote))


def cmd_evaluate(args: argparse.Namespace, settings: Settings) -> None:
    from pumpfleet.evaluation_run import run_evaluate

    _print(run_evaluate(settings, args.snapshot))


def cmd_promote(args: argparse.Namespace, settings: Settings) -> None:
    if args.force and not (args.reason or "").strip():
        raise InputError("--force needs --reason: say why the gates are overridden")
    if args.kind == "anomaly":
        _promote_anomaly(args, settings)
        return
    from pumpfleet.evaluation_run import promote_version

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
    from serve_apps.deploy import Suite, deploy

    suite = Suite(p99_budget_ms=args.p99_budget_ms)
    _print(deploy(settings, args.url, args.pump_class, args.version, args.stage, suite=suite))


def _rul_caps(settings: Settings, log: Any) -> dict[str, float]:
    """Each logged class's RUL cap, from its champion's feature spec (none for a class
    without a champion): the A/B report caps the true RUL as the predictions are."""
    from pumpfleet.registry import CHAMPION, Registry, model_name

    registry = Registry(settings.tracking_uri)
    caps: dict[str, float] = {}
    for cls in [] if log.empty else sorted(log["pump_class"].dropna().unique()):
        if registry.version_by_alias(model_name(cls), CHAMPION) is not None:
            caps[cls] = registry.load(model_name(cls), CHAMPION).spec.rul_cap_hours
    return caps


def cmd_ab_report(args: argparse.Namespace, settings: Settings) -> None:
    import pandas as pd

    from pumpfleet.abreport import arm_reports, format_report
    from pumpfleet.predlog import read_log

    log = read_log(settings.predictions_uri)
    feedback = read_log(f"{settings.predictions_uri}-feedback")
    if args.pump_class and not log.empty:
        log = log[log["pump_class"] == args.pump_class]
    if args.since and not log.empty:
        try:
            since = pd.Timestamp(args.since, tz="UTC")
        except ValueError:
            raise InputError(f"--since: not a date or time: {args.since!r}") from None
        log = log[pd.to_datetime(log["timestamp"], utc=True) >= since]
    reports, diffs = arm_reports(log, feedback, rul_cap_hours=_rul_caps(settings, log))
    if args.json:
        _print({"arms": [r.__dict__ for r in reports], "differences": [d.__dict__ for d in diffs]})
    else:
        print(format_report(reports, diffs))


def cmd_export(args: argparse.Namespace, settings: Settings) -> None:
    from edge_export.export import run_export

    _print(run_export(settings, args.out))


def cmd_serve(args: argparse.Namespace, settings: Settings) -> None:
    from ray_jobs._ray import init_ray
    from serve_apps import run as serve_run

    if not 0.0 <= args.challenger_weight <= 1.0:
        raise InputError(f"--challenger-weight must be in [0, 1], got {args.challenger_weight}")
    # On a Ray of its own (no cluster to join), only its own front door is in front of
    # the replicas: no 30 s drain at every stop for a load balancer that is not there.
    serve_run.use_serve_env(local=settings.ray_address is None, home=settings.home)
    init_ray(settings)
    # SIGTERM (kill, docker stop, systemd) stops it as Ctrl-C does: Serve shut down, the
    # replicas' logs flushed, its HAProxy stopped. From before Serve starts: /readyz
    # answers before start() returns, and a SIGTERM in between met Ray's handler, which
    # aborts the process and leaves Serve's processes to Ray's reaper.
    before = signal.signal(signal.SIGTERM, _interrupt)
    try:
        url = serve_run.start(
            settings, args.port, args.challenger_weight, args.host, insecure_dev=args.insecure_dev
        )
        print(
            f"scoring service at {url}/v1/score (docs at {url}/docs); Ctrl-C stops it", flush=True
        )
        print(f"fleet board at {url}/board (log in with a scoring key)", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        # a second SIGTERM while Serve drains (a supervisor repeating itself) would cut
        # the flush short; SIGKILL still ends it
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        serve_run.stop()
    finally:
        signal.signal(signal.SIGTERM, before)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def cmd_monitor(args: argparse.Namespace, settings: Settings) -> None:
    from ray_jobs._ray import init_ray
    from ray_jobs.monitor import monitor_from_args

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
    options = RetrainOptions.from_args(args)  # a bad value fails before Ray starts
    if args.jobs_address:
        from ray_jobs.triggers import submit_retrain

        job = submit_retrain(args.jobs_address, options, settings.ray_auth_token)
        _print({"submitted": job, "options": options.model_dump()})
        return
    from ray_jobs._ray import init_ray
    from ray_jobs.retrain import retrain_with

    init_ray(settings)
    _print(retrain_with(settings, options))


def cmd_schedule(args: argparse.Namespace, settings: Settings) -> None:
    from pumpfleet.scheduling import run_schedule
    from ray_jobs._ray import init_ray
    from ray_jobs.monitor import run_monitor
    from ray_jobs.retrain import retrain_with
    from ray_jobs.triggers import submit_retrain

    scheduled = RetrainOptions(reason="scheduled", promote=args.promote)

    def retrain() -> None:
        if args.jobs_address:
            job = submit_retrain(args.jobs_address, scheduled, settings.ray_auth_token)
            print(f"submitted {job}", flush=True)
            return
        init_ray(settings)
        _print(retrain_with(settings, scheduled))

    def monitor() -> None:
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
    from pumpfleet_cli.demo import DemoConfig, run_demo, shutdown
    from pumpfleet_cli.demo_summary import summary_text
    from pumpfleet_cli.demo_workspace import set_aside

    cfg = DemoConfig(pumps=args.pumps, days=args.days, seed=args.seed, port=args.port)
    set_aside(settings)
    try:
        result = run_demo(settings, cfg)
    finally:
        shutdown()
    print(summary_text(result))
