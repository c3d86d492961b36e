"""``pumpfleet edge ...``: signing keys, bundles and their verification.

    pumpfleet edge keygen --out PATH
    pumpfleet edge bundle [--class C] [--out DIR]
    pumpfleet edge verify BUNDLE --public-key HEX|FILE
    pumpfleet edge device issue|revoke --device ID
    pumpfleet edge device list
    pumpfleet edge trust show|rotate ...        (edge_export/fleet_cli.py)
    pumpfleet edge rollout start|status|halt|resume ...

Added to the ``pumpfleet`` command by :func:`add_commands`; errors are raised as
PumpfleetError, which the command turns into one line and a non-zero exit.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from edge_export.fleet_cli import add_fleet_commands
from pumpfleet import jsontext
from pumpfleet.errors import BundleError, InputError
from pumpfleet.manifest import BundleManifest
from pumpfleet.settings import Settings


def read_public_key(text: str) -> str:
    """A public key given as hex or as a file holding the hex (what keygen writes)."""
    path = Path(text)
    if path.is_file():
        text = path.read_text().strip()
    try:
        raw = bytes.fromhex(text.strip())
    except ValueError:
        raise InputError(f"--public-key: {text!r} is neither hex nor a readable file") from None
    if len(raw) != 32:
        raise InputError(f"--public-key: an ed25519 public key is 32 bytes, got {len(raw)}")
    return raw.hex()


def cmd_keygen(args: argparse.Namespace, settings: Settings) -> None:
    from pumpfleet import bundle

    out = Path(args.out)
    if out.exists():
        raise InputError(f"--out {out}: a key is already there; keygen never overwrites a key")
    key = bundle.load_or_create_key(out)
    # The private key stays in its 0600 file: only the public half is shown.
    print(f"public key {bundle.public_key_hex(key)}")
    print(f"written to {bundle.public_key_path(out)} (private key: {out}, mode 0600)")


def cmd_bundle(args: argparse.Namespace, settings: Settings) -> None:
    from edge_export.export import run_export

    done = run_export(settings, args.out, args.pump_class, args.expires_days)
    print(jsontext.dumps(done, indent=2))


def verify(path: Path, public_key: str) -> BundleManifest:
    """The manifest of a bundle whose signature and every member's hash verify."""
    from pumpfleet.bundle import read_bundle

    if not path.is_file():
        raise BundleError(f"{path}: no such bundle")
    return read_bundle(path, public_key).manifest


def cmd_verify(args: argparse.Namespace, settings: Settings) -> None:
    path = Path(args.bundle)
    m = verify(path, read_public_key(args.public_key))
    variants = ",".join(sorted(m.variants))
    print(
        f"OK {path.name}: {m.pump_class} v{m.model_version}, "
        f"{len(m.members)} members verified, variants {variants}; {health_model(m)}"
    )


def health_model(manifest: BundleManifest) -> str:
    """The bundle's health (anomaly) model in a few words: version, variants, and which
    were off their limits at export (a device runs FP32 instead)."""
    found = manifest.anomaly
    if found is None:
        return "no health model"
    v = found.variants
    off = sorted(n for n, info in v.items() if not info.within_accuracy)
    said = f"health model v{found.version}, variants {','.join(sorted(v))}"
    return said + (f" ({','.join(off)} off its limits: fp32 runs)" if off else "")


def cmd_device(args: argparse.Namespace, settings: Settings) -> None:
    from pumpfleet import devices

    where = f"{settings.workspace_uri}/{devices.FILE}"
    if args.action != "list" and not args.device:
        raise InputError(f"--device: required to {args.action} a credential")
    if args.action == "issue":
        token = devices.issue(where, args.device)
        # The token is shown this once; the service keeps its digest only.
        print(f"token for {args.device} (put it in the device's api_key or api_key_file):")
        print(token)
    elif args.action == "revoke":
        entry = devices.revoke(where, args.device)
        print(f"{args.device}: revoked at {entry.revoked}; its uploads are refused from now on")
    else:
        print(jsontext.dumps(devices.listing(where), indent=2))


def add_commands(sub: Any) -> None:
    """Add ``edge keygen|bundle|verify|device`` to the ``pumpfleet`` subcommands ``sub``."""
    edge = sub.add_parser("edge", help="edge bundles and devices: keys, build, verify, credentials")
    cmds = edge.add_subparsers(dest="edge_command", required=True)

    s = cmds.add_parser("keygen", help="a new ed25519 signing key (private file is 0600)")
    s.add_argument("--out", required=True, help="private key file to write (PEM)")
    s.set_defaults(func=cmd_keygen)

    s = cmds.add_parser("bundle", help="export champions into signed bundles")
    s.add_argument("--class", dest="pump_class", default=None, help="only this pump class")
    s.add_argument("--out", default=None, help="bundle folder (default: workspace bundles)")
    s.add_argument(
        "--expires-days",
        type=float,
        default=90.0,
        help="no device installs the bundle after this many days (default 90)",
    )
    s.set_defaults(func=cmd_bundle)

    s = cmds.add_parser("verify", help="check a bundle's signature and every member's hash")
    s.add_argument("bundle", help="the .pfbundle file")
    s.add_argument("--public-key", required=True, help="hex, or the .pub file keygen wrote")
    s.set_defaults(func=cmd_verify)

    s = cmds.add_parser("device", help="edge devices' upload credentials: issue, revoke, list")
    s.add_argument("action", choices=["issue", "revoke", "list"])
    s.add_argument("--device", help="the device id (issue, revoke)")
    s.set_defaults(func=cmd_device)

    add_fleet_commands(cmds)
