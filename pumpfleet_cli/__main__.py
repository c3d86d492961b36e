"""``python -m pumpfleet_cli`` is the ``pumpfleet`` command."""

from pumpfleet_cli.main import run

raise SystemExit(run())
