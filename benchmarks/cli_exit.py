"""How long a program takes to exit after its last line: the plain exit against
``pumpfleet.entry.exiting`` (the heap frozen first, so the interpreter's last garbage
collections skip it), on the same programs, alternating.

    python -m benchmarks.cli_exit [--runs 3]

Two programs, each run both ways in a fresh interpreter:

- **ingest**: `pumpfleet ingest` of a small simulated fleet into a new folder (the
  vectorised ingest in process, its snapshot recorded in MLflow on SQLite);
- **job imports**: what a Ray job or the demo loads (Ray, Ray Tune, torch, MLflow, NannyML,
  pandas), then one line.

For each run: seconds from the start to the program's last line of output, and from that
line to the process's end (*tail*). The table gives the medians; the last line,
``tail_plain_s=<ingest, plain> tail_frozen_s=<ingest, exiting> ratio=<plain / exiting>``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pumpfleet.tables import format_table

PLAIN = "from pumpfleet_cli.main import main; raise SystemExit(main())"
FROZEN = "from pumpfleet_cli.main import run; raise SystemExit(run())"
IMPORTS = (
    "import nannyml, mlflow, pandas, ray, ray.tune, torch; "
    "from pumpfleet.entry import exiting; print('imported', flush=True); "
)


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """Seconds to the last line of output (stdout and stderr), seconds from it to the
    process's end, and the exit code."""
    started = time.monotonic()
    last = started
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True
    )
    assert proc.stdout is not None
    for _ in proc.stdout:
        last = time.monotonic()
    code = proc.wait()
    return last - started, time.monotonic() - last, code


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cli_exit", description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="pumpfleet-exit-") as tmp:
        env = {**os.environ, "PUMPFLEET_HOME": tmp}
        fleet = Path(tmp) / "fleet"
        simulate = ["simulate", "--pumps", "8", "--days", "20", "--out", str(fleet)]
        subprocess.run(
            [py, "-m", "pumpfleet_cli", *simulate], env=env, check=True, capture_output=True
        )

        def ingest(entry: str, out: str) -> list[str]:
            return [py, "-c", entry, "ingest", "--source", str(fleet), "--out", out]

        programs = {
            ("ingest", "plain"): lambda i: ingest(PLAIN, f"{tmp}/plain-{i}"),
            ("ingest", "exiting"): lambda i: ingest(FROZEN, f"{tmp}/frozen-{i}"),
            ("job imports", "plain"): lambda i: [py, "-c", IMPORTS + "raise SystemExit(0)"],
            ("job imports", "exiting"): lambda i: [
                py,
                "-c",
                IMPORTS + "raise SystemExit(exiting(0))",
            ],
        }
        seen: dict[tuple[str, str], list[tuple[float, float]]] = {k: [] for k in programs}
        for i in range(args.runs):
            for key, command in programs.items():  # alternating, in the same order each round
                to_last, tail, code = timed(command(i), env)
                if code != 0:
                    raise SystemExit(f"{key[0]} ({key[1]}) exited {code}")
                seen[key].append((to_last, tail))
    rows = []
    tails = {k: statistics.median(t for _, t in v) for k, v in seen.items()}
    for (program, arm), runs in seen.items():
        tail = tails[(program, arm)]
        rows.append(
            [
                program,
                arm,
                len(runs),
                f"{statistics.median(t for t, _ in runs):.2f}",
                f"{tail:.2f}",
                f"{tails[(program, 'plain')] / tail:.1f}x" if tail > 0 else "-",
            ]
        )
    headers = ["program", "exit", "runs", "to last line s", "tail s", "tail, plain / this"]
    print(format_table(headers, rows))
    plain, frozen = tails[("ingest", "plain")], tails[("ingest", "exiting")]
    print(f"tail_plain_s={plain:.3f} tail_frozen_s={frozen:.3f} ratio={plain / frozen:.1f}")


if __name__ == "__main__":
    main()
