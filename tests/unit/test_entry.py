"""How the programs exit: the code they return, with their exit handlers run and their
heap left out of the interpreter's last collections (pumpfleet.entry.exiting)."""

from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

from pumpfleet.entry import exiting


def test_exiting_returns_the_code_and_freezes_the_heap() -> None:
    gc.unfreeze()  # nothing frozen before: the count below is exiting's
    try:
        assert exiting(3) == 3
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_a_program_that_exits_through_it_still_runs_its_exit_handlers(tmp_path: Path) -> None:
    done, logged = tmp_path / "atexit.txt", tmp_path / "log.txt"
    script = f"""
import atexit, logging, sys
from pumpfleet.entry import exiting
logging.basicConfig(filename={str(logged)!r}, level=logging.INFO)
atexit.register(lambda: open({str(done)!r}, "w").write("ran"))
cycles = []
for i in range(1000):
    a = {{"i": i}}
    a["self"] = a
    cycles.append(a)
logging.getLogger("p").info("last line")
raise SystemExit(exiting(5))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 5, proc.stderr
    assert done.read_text() == "ran"
    assert "last line" in logged.read_text()


def test_the_exit_benchmark_times_the_tail_after_the_last_line() -> None:
    from benchmarks.cli_exit import timed

    program = "import time; print('a', flush=True); time.sleep(0.2); print('b', flush=True); "
    to_last, tail, code = timed([sys.executable, "-c", program + "time.sleep(0.4)"], {})
    assert code == 0
    assert 0.2 <= to_last < 5 and 0.4 <= tail < 5


def test_a_reader_that_stops_early_ends_the_cli_quietly() -> None:
    from pumpfleet_cli.main import BROKEN_PIPE

    # what `pumpfleet history --class esp | head -3` meets when head exits first
    program = (
        "import pumpfleet_cli.main as cli\n"
        "def printing(argv=None):\n"
        "    print('x' * 100)\n"
        "    raise BrokenPipeError(32, 'Broken pipe')\n"
        "cli.main = printing\n"
        "raise SystemExit(cli.run())\n"
    )
    proc = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True)
    assert proc.returncode == BROKEN_PIPE == 141
    assert proc.stderr == ""
