"""A batch's way through a replica, in process, without Serve or HTTP: decode and
validate (the body into items, each item's window cut for its model and checked), then
group, score with the ONNX model, and encode the answer. Today's JSON decoder (pydantic
alone, each item's window built one at a time) is the baseline, run on the same body in
the same run, against the msgspec decoder with its batched windows (and the answer
written by msgspec, not ``json.dumps``); the Arrow IPC path is timed beside them, alone
and with the prediction log written ahead as a replica writes it before it answers. The
last arm is what a replica's fleet feed does with the batch's rows off the request path
(explained where risky, into the fleet database on SQLite), on the same cores.

    python -m benchmarks.serve_decode [--batch 1000] [--repeats 15] [--bad 0.01]

Arms are interleaved, one run of each in turn, and each figure is the median of
``--repeats`` runs: a busy machine slows every arm alike; each arm's CPU time (this
process's) is printed beside, which a busy machine moves far less. Both decoders are checked to
give the same items, windows and errors (on the clean batch and on one with ``--bad``
of its items broken in the ways the tests name) before anything is timed. The last line
is ``json_decode_ratio=<x> json_path_ratio=<x> arrow_wps=<x> ...``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from starlette.responses import JSONResponse

from benchmarks.serve_harness import CLASS, WINDOW, arrow_batch, bodies, cnn, esp_spec
from pumpfleet.features import FeatureSpec
from pumpfleet.routing import Arm
from pumpfleet.tables import format_table
from serve_apps import batch, prediction_log
from serve_apps.model_set import ServedClass, ServedModel


def _broken(items: list[dict[str, Any]], share: float) -> list[dict[str, Any]]:
    """``items`` with ``share`` of them broken, in turn, in the ways the tests name."""
    out = [dict(x) for x in items]
    flow = next(iter(out[0]["readings"]))
    breaks: list[Callable[[dict[str, Any]], None]] = [
        lambda x: x["readings"].__setitem__(flow, ["12.5", *x["readings"][flow][1:]]),
        lambda x: x["readings"].__setitem__(flow, [True, *x["readings"][flow][1:]]),
        lambda x: x.__setitem__("pump_id", " no"),
        lambda x: x.__setitem__("pump_class", "esp\n"),
        lambda x: x.__setitem__("extra", 1),
        lambda x: x["readings"].__setitem__(flow, [1e6] * WINDOW),  # out of range
        lambda x: x["readings"].__setitem__(flow, [None] * WINDOW),
        lambda x: x["readings"].pop(flow),
    ]
    step = max(1, round(1 / share)) if share > 0 else len(out) + 1
    for k, i in enumerate(range(0, len(out), step)):
        out[i] = {**out[i], "readings": dict(out[i]["readings"])}
        breaks[k % len(breaks)](out[i])
    return out


def _classes(spec: FeatureSpec) -> dict[str, ServedClass]:
    """The class served as ``benchmarks.serve_load`` serves it: one CNN of the default
    size as champion and challenger, in onnxruntime on one thread."""
    from pumpfleet import runtime

    run = runtime.onnx_runner(cnn(spec)[1], threads=1)
    arms = {Arm.CHAMPION: ServedModel("1", spec, run), Arm.CHALLENGER: ServedModel("2", spec, run)}
    return {CLASS: ServedClass(arms, weight=0.2)}


class TodayWindows:
    """Today's JSON windows: each item's built on its own, then all checked."""

    def __init__(self, windows: batch.ReadingsWindows) -> None:
        self.windows = windows

    def take(
        self, rows: list[int], spec: FeatureSpec, pump_class: str, strict: bool = True
    ) -> tuple[list[int], np.ndarray, batch.Problems]:
        errors: batch.Problems = {}
        ok, stacked = self.windows.one_by_one(rows, spec, pump_class, strict, errors)
        ok, stacked = batch.checked(ok, stacked, spec, "readings", errors)
        return ok, stacked, errors


def today_json(body: bytes) -> batch.Items:
    """Today's decoding of a JSON batch: pydantic alone, windows one by one."""
    items = batch.decode_json(body, fast=False)
    assert isinstance(items.windows, batch.ReadingsWindows)
    items.windows = TodayWindows(items.windows)
    return items


def _windows(items: batch.Items, spec: FeatureSpec) -> tuple[batch.Items, np.ndarray]:
    """Decode and validate: the items, their windows cut and checked."""
    rows = [i for i in range(len(items)) if i not in items.errors]
    _, stacked, errors = items.windows.take(rows, spec, CLASS)
    items.errors.update(errors)
    return items, stacked


def whole_path(
    items: batch.Items, classes: dict[str, ServedClass], encode: str, log: Any = None
) -> Any:
    """Group, score and encode decoded items as the replica does (the prediction log
    written ahead into ``log`` where one is given, as the replica does before it
    answers): ``encode`` today's JSON (an answer per item, Starlette's ``json.dumps``),
    ``json`` (msgspec) or ``arrow``."""
    answers = batch.Answers(len(items))
    for g in batch.group(items, classes, "salt"):
        scores = batch.score(g)
        health = batch.health_columns(None, scores, len(g.rows))
        answers.fill(g, scores, health)
        if log is not None:
            columns = prediction_log.log_columns(g, items, scores, health, 1.0)
            prediction_log.write(log, columns, len(g.rows))
    if encode == "arrow":
        return batch.encode_arrow(items, answers)
    if encode == "json":
        return batch.encode_json_body(items, answers)
    errors = batch.error_list(items)
    results = [batch.result(items, answers, i) for i in range(len(items))]
    return JSONResponse({"results": results, "errors": errors}).body


def fleet_rows(
    items: batch.Items, classes: dict[str, ServedClass], db: Any, explain: int
) -> Callable[[], object]:
    """What a replica's fleet feed does with a scored batch, off the request path: each
    group's prediction-log columns as fleet rows (``explain`` risky windows explained,
    a drain's budget) into the fleet database ``db``, stamped anew at each call (each
    call is the pumps' next window)."""
    from serve_apps.fleet_feed import cloud_rows

    scored = []
    for g in batch.group(items, classes, "salt"):
        scores = batch.score(g)
        health = batch.health_columns(None, scores, len(g.rows))
        scored.append((g, prediction_log.log_columns(g, items, scores, health, 1.0)))

    def feed() -> None:
        budget = [explain]
        for g, columns in scored:
            stamp = np.full(len(g.rows), time.time_ns(), dtype="datetime64[ns]")
            db.ingest(cloud_rows(columns | {"timestamp": stamp}, g.model, g.windows, budget))

    return feed


def _same(a: tuple[batch.Items, np.ndarray], b: tuple[batch.Items, np.ndarray]) -> None:
    """Both decoders gave the same items, windows and errors."""
    (x, wx), (y, wy) = a, b
    assert x.pump_id == y.pump_id and x.pump_class == y.pump_class, "items differ"
    assert x.errors == y.errors, f"errors differ: {x.errors} != {y.errors}"
    assert np.array_equal(wx, wy, equal_nan=True), "windows differ"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serve_decode", description=__doc__)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--bad", type=float, default=0.01, help="share of broken items")
    args = parser.parse_args(argv)

    spec = esp_spec()
    clean = bodies(spec, args.batch)
    body = json.dumps({"items": clean}).encode()
    mixed = json.dumps({"items": _broken(clean, args.bad)}).encode()
    arrow = arrow_batch(spec, args.batch)
    classes = _classes(spec)
    for b in (body, mixed):
        _same(_windows(today_json(b), spec), _windows(batch.decode_json(b), spec))
    today = whole_path(today_json(body), classes, "today")
    assert today == whole_path(batch.decode_json(body), classes, "json"), "answers differ"
    scratch = Path(tempfile.mkdtemp(prefix="pumpfleet-serve-decode-"))
    try:
        _timed(args, spec, body, mixed, arrow, classes, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _timed(
    args: argparse.Namespace,
    spec: FeatureSpec,
    body: bytes,
    mixed: bytes,
    arrow: bytes,
    classes: dict[str, ServedClass],
    scratch: Path,
) -> None:
    from pumpfleet.fleet_store import FleetDB
    from serve_apps.durable_log import DurableLog
    from serve_apps.schemas import FleetConfig

    log = DurableLog(str(scratch / "predictions"), max_rows=10**9)  # flushed by no one
    db = FleetDB(f"sqlite:///{scratch / 'fleet.db'}")
    feed = fleet_rows(batch.decode_arrow(arrow), classes, db, FleetConfig().explain_per_batch)
    for _ in range(5):  # the alerts the first windows open (an untrained model's risk)
        feed()

    arms: dict[str, Callable[[], object]] = {
        "json decode, pydantic": lambda: _windows(today_json(body), spec),
        "json decode, msgspec": lambda: _windows(batch.decode_json(body), spec),
        f"json decode {args.bad:.0%} bad, pydantic": lambda: _windows(today_json(mixed), spec),
        f"json decode {args.bad:.0%} bad, msgspec": lambda: _windows(
            batch.decode_json(mixed), spec
        ),
        "arrow decode": lambda: _windows(batch.decode_arrow(arrow), spec),
        "json path, pydantic": lambda: whole_path(today_json(body), classes, "today"),
        "json path, msgspec": lambda: whole_path(batch.decode_json(body), classes, "json"),
        "arrow path": lambda: whole_path(batch.decode_arrow(arrow), classes, "arrow"),
        "arrow path, logged": lambda: whole_path(batch.decode_arrow(arrow), classes, "arrow", log),
        "fleet rows of a batch (SQLite)": feed,
    }
    times: dict[str, list[float]] = {k: [] for k in arms}
    cpu: dict[str, list[float]] = {k: [] for k in arms}  # this process's CPU seconds
    for fn in arms.values():
        fn()  # warm up
    for _ in range(args.repeats):
        for name, fn in arms.items():
            t, c = time.perf_counter(), time.process_time()
            fn()
            times[name].append(time.perf_counter() - t)
            cpu[name].append(time.process_time() - c)
    median = {k: statistics.median(v) for k, v in times.items()}
    cpu_ms = {k: statistics.median(v) * 1e3 for k, v in cpu.items()}
    wps = {k: args.batch / v for k, v in median.items()}
    base = {
        k: median[k.replace("msgspec", "pydantic")] if "msgspec" in k else median[k] for k in arms
    }
    rows = [
        [k, f"{median[k] * 1e3:.2f}", f"{cpu_ms[k]:.2f}", f"{wps[k]:,.0f}", ratio]
        for k in arms
        for ratio in [f"{base[k] / median[k]:.2f}x"]
    ]
    print(
        f"a batch of {args.batch} windows ({WINDOW} x {len(spec.inputs)}) through a replica "
        f"in process, no HTTP: JSON body {len(body):,} bytes, Arrow {len(arrow):,} bytes; "
        f"median of {args.repeats} interleaved runs (wall and CPU time); path = decode, "
        "group, score (ONNX, 1 thread), encode; logged: and the prediction log written "
        "ahead; fleet rows: what the replica's fleet feed does with the batch's rows, off "
        "the request path"
    )
    print(format_table(["arm", "ms", "CPU ms", "windows/s", "x pydantic"], rows))
    figures = {
        "json_decode_ratio": median["json decode, pydantic"] / median["json decode, msgspec"],
        "json_bad_decode_ratio": median[f"json decode {args.bad:.0%} bad, pydantic"]
        / median[f"json decode {args.bad:.0%} bad, msgspec"],
        "json_path_ratio": median["json path, pydantic"] / median["json path, msgspec"],
        "json_path_wps": wps["json path, msgspec"],
        "arrow_decode_wps": wps["arrow decode"],
        "arrow_wps": wps["arrow path"],
        "arrow_logged_wps": wps["arrow path, logged"],
        "arrow_cpu_ms": cpu_ms["arrow path"],
        "arrow_logged_cpu_ms": cpu_ms["arrow path, logged"],
        "fleet_rows_cpu_ms": cpu_ms["fleet rows of a batch (SQLite)"],
    }
    print(
        " ".join(
            f"{k}={v:.2f}" if "ratio" in k or "ms" in k else f"{k}={v:.0f}"
            for k, v in figures.items()
        )
    )


if __name__ == "__main__":
    main()
