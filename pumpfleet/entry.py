"""What every ``python -m <part>.<name>`` entry point shares: logging, the one-line
error on bad input, and the JSON summary on stdout."""

from __future__ import annotations

import gc
import logging
import sys
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from pumpfleet import jsontext
from pumpfleet.errors import PumpfleetError, one_line


def run_main(job: Callable[[], Any]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        result = job()
    except PumpfleetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ValidationError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    print(jsontext.dumps(result, indent=2))
    return exit_code(result)


def exiting(code: int) -> int:
    """``code``, for a program's ``SystemExit`` once its work is done, after moving every
    object it made to the garbage collector's permanent generation (``gc.freeze``).

    An interpreter collects its whole heap several times as it exits: after MLflow and
    pandas were loaded, 0.75 s of `pumpfleet ingest`'s exit after its last line, 0.08 s
    with the heap frozen (``python -m benchmarks.cli_exit``). The ``atexit`` handlers
    (logging's flush, Ray's shutdown) still run; what the collections would have freed is
    freed by the process's end."""
    gc.freeze()
    return code


PARTIAL = 3


def exit_code(result: Any) -> int:
    """0 on success; 3 when the job finished but set some input aside (partial success)."""
    partial = isinstance(result, dict) and result.get("status") == "partial"
    return PARTIAL if partial else 0
