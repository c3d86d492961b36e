"""``pumpfleet edge trust ...`` and ``pumpfleet edge rollout ...``: the fleet's trust root
and staged rollouts, added to ``pumpfleet edge`` by :func:`add_fleet_commands`.

    pumpfleet edge trust show
    pumpfleet edge trust rotate --role targets --key NEW.pem [--threshold N]
                                [--sign-with OLD.pem] [--expires-days D]
    pumpfleet edge rollout start --class C --bundle FILE [--canary D1,D2 | --canary-percent P]
                                 [--waves 25,100] [--soak-minutes M] [abort criteria]
    pumpfleet edge rollout status [--class C]
    pumpfleet edge rollout halt|resume --class C [--reason TEXT]

Errors are raised as PumpfleetError: one line and a non-zero exit.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pumpfleet import jsontext
from pumpfleet.errors import InputError
from pumpfleet.settings import Settings


def _signing(settings: Settings) -> tuple[Any, str]:
    from edge_export.export import signing_key_path
    from pumpfleet import bundle

    key = bundle.load_or_create_key(signing_key_path(settings))
    return key, bundle.public_key_hex(key)


def _keys(paths: list[str] | None, create: bool) -> list[Any]:
    from pumpfleet import bundle

    out = []
    for p in paths or []:
        path = Path(p)
        if not path.exists() and not create:
            raise InputError(f"{p}: no such key")
        out.append(bundle.load_or_create_key(path))
    return out


def cmd_trust(args: argparse.Namespace, settings: Settings) -> None:
    from pumpfleet import trust_repo

    key, public = _signing(settings)
    if args.action == "show":
        root = trust_repo.current(settings.home, public)
        print(jsontext.dumps(root.model_dump(mode="json"), indent=2))
        return
    if not args.role or not args.key:
        raise InputError("rotate: --role and --key are required")
    new = _keys(args.key, create=True)
    held = [key, *_keys(args.sign_with, create=False)]
    env = trust_repo.rotate(
        settings.home,
        public,
        held,
        {role: new for role in args.role},
        {role: args.threshold for role in args.role},
        args.expires_days,
    )
    signed = env["signed"]
    print(
        f"root v{signed['version']} written to {trust_repo.folder(settings.home)} "
        f"(expires {signed['expires']}): {', '.join(args.role)} now signed by "
        f"{args.threshold} of {len(new)} key(s); devices take it with their next assignment"
    )


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"--waves {text!r}: comma-separated percents, e.g. 25,100") from None


def cmd_rollout(args: argparse.Namespace, settings: Settings) -> None:
    import time

    from pumpfleet import fleet_devices, trust_repo

    home, log_root, now = settings.home, settings.predictions_dir, time.time()
    _, public = _signing(settings)
    if args.action in ("halt", "resume"):
        if not args.pump_class:
            raise InputError(f"{args.action}: --class is required")
        entry = fleet_devices.set_status(
            home, args.pump_class, args.action == "halt", args.reason or "by hand", now
        )
        print(f"{args.pump_class}: rollout {entry.plan.rollout_id} {entry.state.status}")
        return
    if args.action == "status":
        fleet_devices.tick(home, log_root, now)
        book = fleet_devices.load(home)
        shown = {
            c: {"plan": e.plan.model_dump(mode="json"), "state": e.state.model_dump(mode="json")}
            for c, e in book.rollouts.items()
            if args.pump_class in (None, c)
        }
        rows = fleet_devices.devices(home, log_root, now)
        print(jsontext.dumps({"rollouts": shown, "devices": rows}, indent=2))
        return
    if not args.pump_class or not args.bundle:
        raise InputError("start: --class and --bundle are required")
    root = trust_repo.current(home, public)
    keys, threshold = root.role_keys("targets"), root.threshold("targets")
    target = fleet_devices.target(Path(args.bundle), keys, threshold)
    previous = (
        fleet_devices.target(Path(args.previous), keys, threshold)
        if args.previous
        else _previous(settings, args.pump_class, keys)
    )
    try:
        plan = _plan(args, target, previous, now)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        why = str(first["msg"]).removeprefix("Value error, ")
        raise InputError(f"rollout plan: {where + ': ' if where else ''}{why}") from None
    entry = fleet_devices.start(home, log_root, plan, now)
    print(
        f"{args.pump_class}: rollout {plan.rollout_id} of {target.bundle} started; "
        f"canaries {', '.join(sorted(entry.state.members))}"
    )


def _plan(args: argparse.Namespace, target: Any, previous: Any, now: float) -> Any:
    from pumpfleet import rollout

    return rollout.Plan(
        rollout_id=args.id or f"{args.pump_class}-{target.bundle}-{int(now)}",
        pump_class=args.pump_class,
        target=target,
        previous=previous,
        canary=[d for d in (args.canary or "").split(",") if d],
        canary_percent=args.canary_percent,
        waves=_floats(args.waves),
        soak_seconds=args.soak_minutes * 60,
        ready=args.ready,
        abort=rollout.AbortCriteria(
            max_self_test_failures=args.max_self_test_failures,
            max_rollbacks=args.max_rollbacks,
            alarm_rate_jump=args.alarm_rate_jump,
            max_upload_error_rate=args.max_upload_error_rate,
        ),
    )


def _previous(settings: Settings, pump_class: str, keys: list[str]) -> Any:
    from pumpfleet import fleet_devices

    running = fleet_devices.previous_bundle(settings.predictions_dir, pump_class)
    if running is None:
        return None
    return fleet_devices.find_bundle(settings.bundles_dir / pump_class, running, keys)


def add_fleet_commands(cmds: Any) -> None:
    """Add ``trust`` (and ``rollout``) under ``pumpfleet edge``."""
    s = cmds.add_parser("trust", help="the fleet's trust root: show it, rotate a role's keys")
    s.add_argument("action", choices=["show", "rotate"])
    s.add_argument(
        "--role",
        action="append",
        choices=["root", "targets", "assignment"],
        help="a role whose keys --key replaces (repeat for several)",
    )
    s.add_argument("--key", action="append", help="a new private key (PEM; made if absent)")
    s.add_argument("--threshold", type=int, default=1, help="of the new keys, how many sign")
    s.add_argument(
        "--sign-with",
        action="append",
        help="more private keys of the current root role (the bundle signing key is used)",
    )
    s.add_argument("--expires-days", type=float, default=365.0)
    s.set_defaults(func=cmd_trust)

    s = cmds.add_parser("rollout", help="staged rollouts of a bundle: start, status, halt, resume")
    s.add_argument("action", choices=["start", "status", "halt", "resume"])
    s.add_argument("--class", dest="pump_class", help="the pump class")
    s.add_argument("--bundle", help="start: the .pfbundle to roll out")
    s.add_argument("--previous", help="start: the bundle a halt sends devices back to")
    s.add_argument("--id", help="start: the rollout's id (default: class-bundle-time)")
    s.add_argument("--canary", help="start: canary devices, comma-separated")
    s.add_argument("--canary-percent", type=float, default=5.0)
    s.add_argument("--waves", default="25,100", help="cumulative percents after the canaries")
    s.add_argument("--soak-minutes", type=float, default=60.0)
    s.add_argument("--ready", type=float, default=0.9, help="share on the bundle to go on")
    s.add_argument("--max-self-test-failures", type=int, default=0)
    s.add_argument("--max-rollbacks", type=int, default=0)
    s.add_argument("--alarm-rate-jump", type=float, default=3.0)
    s.add_argument("--max-upload-error-rate", type=float, default=0.5)
    s.add_argument("--reason", help="halt: why")
    s.set_defaults(func=cmd_rollout)
