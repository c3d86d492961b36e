"""Re-run the benchmarks whose figures the docs quote, at reduced size, and fail when a
figure moved by more than its stated tolerance.

    python -m benchmarks.bench_check [--only NAME ...] [--update]      (make bench-check)

The reference figures live in ``benchmarks/reference.json``: per check, the command (a
``python -m`` module and its arguments), the figure read from the command's last line
(``key=value ...``), its value, the tolerance, and the commit that produced it. A check
whose data is absent (``realdata``: ../shared/data) is skipped and says so. ``--update``
writes the figures of this run, with this commit, as the new references.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from pydantic import BaseModel, Field

REFERENCE = Path(__file__).with_name("reference.json")
ROOT = Path(__file__).resolve().parents[1]


class Check(BaseModel):
    """One reference figure and how to reproduce it."""

    name: str
    module: str  # run as python -m <module> <args...>
    args: list[str]
    key: str  # the figure's key on the command's last line
    value: float
    tolerance: float = Field(ge=0)  # the figure may move by this much, absolute
    needs: str | None = None  # a data folder under ../shared/data the check needs
    commit: str | None = None
    note: str = ""


def last_line_figures(output: str) -> dict[str, float]:
    """The ``key=value`` pairs of a benchmark's last non-empty line (numbers only)."""
    lines = [line for line in output.strip().splitlines() if line.strip()]
    out: dict[str, float] = {}
    for part in (lines[-1] if lines else "").split():
        key, sep, value = part.partition("=")
        if not sep:
            continue
        try:
            out[key] = float(value)
        except ValueError:
            continue
    return out


def verdict(check: Check, got: float | None) -> tuple[bool, str]:
    """Whether a re-run figure is within the check's tolerance, and the line saying so."""
    if got is None:
        return False, f"{check.name}: the run printed no {check.key}="
    moved = got - check.value
    ok = abs(moved) <= check.tolerance
    return ok, (
        f"{check.name}: {check.key} {got:g} (reference {check.value:g} at "
        f"{(check.commit or '?')[:12]}, moved {moved:+.3g}, tolerance {check.tolerance:g}) "
        + ("ok" if ok else "MOVED")
    )


def load(path: Path = REFERENCE) -> list[Check]:
    return [Check.model_validate(c) for c in json.loads(path.read_text())["checks"]]


def _commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


def run_check(check: Check, data_root: Path) -> tuple[float | None, str]:
    """Run one check's command; its figure (None if absent) and output."""
    args = [a.replace("{data}", str(data_root)) for a in check.args]
    proc = subprocess.run(
        [sys.executable, "-m", check.module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        return None, output
    return last_line_figures(proc.stdout).get(check.key), output


def main(argv: list[str] | None = None) -> int:
    from pumpfleet.adapters import shared_data_dir

    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_check", description=__doc__)
    parser.add_argument("--only", nargs="+", default=None, help="check names")
    parser.add_argument("--update", action="store_true", help="write this run's figures")
    parser.add_argument("--reference", type=Path, default=REFERENCE)
    args = parser.parse_args(argv)
    data_root = shared_data_dir()
    checks = load(args.reference)
    failed = 0
    for check in checks:
        if args.only and check.name not in args.only:
            continue
        if check.needs and not (data_root / check.needs).is_dir():
            print(f"{check.name}: skipped, no {data_root / check.needs}")
            continue
        started = time.monotonic()
        got, output = run_check(check, data_root)
        ok, line = verdict(check, got)
        print(f"{line} ({time.monotonic() - started:.0f} s, load {os.getloadavg()[0]:.1f})")
        if got is None:
            print(output[-2000:])
        if args.update and got is not None:
            check.value, check.commit = got, _commit()
        elif not ok:
            failed += 1
    if args.update:
        data = {"checks": [c.model_dump(exclude_none=True) for c in checks]}
        args.reference.write_text(json.dumps(data, indent=2) + "\n")
        print(f"references written to {args.reference}")
        return 0
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
