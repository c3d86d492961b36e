"""``pumpfleet edge trust ...`` and ``pumpfleet edge rollout ...``: the fleet's trust root
and staged rollouts, added to ``pumpfleet edge`` by :func:`add_fleet_commands`.

    pumpfleet edge trust show
    pumpfleet edge trust rotate --role targets --key NEW.pem [--threshold N]
                                [--sign-with OLD.pem] [--expires-days D]

Errors are raised as PumpfleetError: one line and a non-zero exit.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

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
