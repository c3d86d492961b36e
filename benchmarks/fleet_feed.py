"""What a replica's fleet feed costs per scored window, in CPU time: the batches of a
fleet of ``--batch`` pumps, one window each, scored by a trained CNN (champion and
challenger, as a replica's Arrow path scores them), go off the request path into the
fleet state as :mod:`serve_apps.fleet_feed` takes them. Arms, on the same batches:

- **floor**: the batch's score rows by the sqlite3 module's own ``executemany`` into a
  table like the score history (the least a write of the rows can cost);
- **rows**: the prediction-log columns as fleet rows (:func:`cloud_rows`, nothing explained);
- **rows + explanations**: the same with a drain's budget (``--explain``) of risky windows
  explained by occlusion; *explanations* is the difference;
- **ingest**: :meth:`FleetDB.ingest` of the batch's rows on SQLite;
- **drain**: the whole drain, each group queued as a replica queues it and written by
  the feed's thread (:class:`FleetFeed`): rows, explanations and ingest.

Then **a long history**: ``--history-drains`` drains of ``--drain-batches`` batches each
(as a replica's feed gathers the batches that come within its 0.25 s) into a score
history that grows to their rows, by :meth:`FleetDB.ingest` with the history's rows
inserted pump by pump (:meth:`FleetDB.history`, today's) and in time order (the ingest
before it, the baseline), each drain into both databases in turn; the CPU per 1,000
windows of the first and the last quarter of the drains.

    python -m benchmarks.fleet_feed [--batch 1000] [--repeats 15] [--explain 16]
                                    [--history-drains 30] [--drain-batches 10]

Each repeat is the fleet's next batch (every pump's next window), through every arm in
turn; figures are medians of this process's CPU time (``time.process_time``: the feed's
thread included, and far less moved than wall time by other jobs on the machine). The
last line is ``feed_ms_per_1000=<x> ingest_ms_per_1000=<x> explain_ms_per_drain=<x>
floor_ms_per_1000=<x> ... history_pump_ms_per_1000=<x> history_time_ms_per_1000=<x>
history_ratio=<time order's CPU / pump order's> explained_per_drain=<n>``, the history's
figures from its last quarter of drains.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.serve_harness import CLASS, WINDOW, esp_spec
from pumpfleet.features import FeatureSpec
from pumpfleet.routing import Arm
from pumpfleet.tables import format_table
from serve_apps.model_set import ServedClass, ServedModel

HOUR_NS = 3600 * 10**9
SICK = 0.08  # share of the fleet's pumps whose windows show a failure coming


def windows(rng: np.random.Generator, sick: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    """One raw window per pump: readings about the class's means, and on a sick pump the
    first two channels rising through the window's second half."""
    raw = rng.normal(50, 10, (len(sick), WINDOW, len(spec.inputs)))
    ramp = np.clip(np.linspace(-1, 1, WINDOW), 0, None) * 35
    raw[sick, :, :2] += ramp[:, None]
    return raw


def trained(spec: FeatureSpec, epochs: int) -> Any:
    """A CNN of the default size trained to tell sick windows from healthy ones, as
    onnxruntime on one thread."""
    from pumpfleet import onnx_io, runtime
    from pumpfleet.features import window_features
    from pumpfleet.models import ModelConfig
    from pumpfleet.training import Arrays, TrainConfig, fit

    rng = np.random.default_rng(0)

    def arrays(n: int) -> Arrays:
        sick = rng.random(n) < 0.3
        rul = np.where(sick, rng.uniform(5, 40, n), rng.uniform(100, 168, n))
        x = window_features(windows(rng, sick, spec), spec)
        return Arrays(x=x, rul=rul.astype(np.float32), failure=sick.astype(np.int8))

    cfg = TrainConfig(epochs=epochs, model=ModelConfig())
    model, _ = fit(arrays(4000), arrays(500), spec, cfg)
    return runtime.onnx_runner(onnx_io.to_onnx(model.eval(), WINDOW, spec.n_channels), threads=1)


def arrow(pumps: list[str], raw: np.ndarray) -> bytes:
    import pyarrow as pa

    from pumpfleet.ingest_block import to_ipc

    flat = raw.reshape(len(raw), -1)
    table = pa.table(
        {
            "pump_id": pumps,
            "pump_class": [CLASS] * len(pumps),
            "window": pa.array(list(flat), type=pa.list_(pa.float64())),
        }
    )
    return to_ipc(table)


def scored_batches(
    classes: dict[str, ServedClass], spec: FeatureSpec, n: int, count: int
) -> list[list[tuple[dict[str, Any], Any, np.ndarray]]]:
    """``count`` batches of the fleet's successive windows, each scored as a replica's
    Arrow path scores it: per group, its prediction-log columns, model and windows."""
    from serve_apps import batch, prediction_log

    rng = np.random.default_rng(1)
    pumps = [f"{CLASS}-{i:05d}" for i in range(n)]
    sick = rng.random(n) < SICK
    out = []
    for k in range(count):
        items = batch.decode_arrow(arrow(pumps, windows(rng, sick, spec)))
        groups = []
        for g in batch.group(items, classes, "salt"):
            scores = batch.score(g)
            health = batch.health_columns(None, scores, len(g.rows))
            columns = prediction_log.log_columns(g, items, scores, health, 1.0)
            columns["timestamp"] = np.full(len(g.rows), (10**6 + k) * HOUR_NS, "datetime64[ns]")
            groups.append((columns, g.model, g.windows))
        out.append(groups)
    return out


class Floor:
    """The score rows by sqlite3's own executemany, into a table like the score history."""

    def __init__(self, path: Path) -> None:
        import sqlalchemy as sa
        from sqlalchemy.dialects import sqlite

        from pumpfleet.fleet_schema import scores

        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        dialect = sqlite.dialect()
        self.conn.execute(str(sa.schema.CreateTable(scores).compile(dialect=dialect)))
        for index in scores.indexes:
            self.conn.execute(str(sa.schema.CreateIndex(index).compile(dialect=dialect)))
        cols = "pump_id, at, rul_hours, failure_probability, model_version, arm, health_score"
        self.sql = f"INSERT INTO fleet_scores ({cols}, anomaly) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"

    def write(self, rows: list[Any]) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.executemany(
            self.sql,
            [(r.pump_id, r.at, r.rul_hours, r.failure_probability, r.model_version, r.arm,
              r.health_score, r.anomaly) for r in rows],
        )  # fmt: skip
        self.conn.execute("COMMIT")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fleet_feed", description=__doc__)
    parser.add_argument("--batch", type=int, default=1000, help="pumps: windows a batch")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--explain", type=int, default=16, help="a drain's explanation budget")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument(
        "--history-drains", type=int, default=30, help="drains into the long history"
    )
    parser.add_argument("--drain-batches", type=int, default=10, help="batches a drain")
    args = parser.parse_args(argv)

    spec = esp_spec()
    run = trained(spec, args.epochs)
    arms_ = {Arm.CHAMPION: ServedModel("1", spec, run), Arm.CHALLENGER: ServedModel("2", spec, run)}
    classes = {CLASS: ServedClass(arms_, weight=0.2)}
    warm = 3
    batches = scored_batches(classes, spec, args.batch, warm + args.repeats)
    scratch = Path(tempfile.mkdtemp(prefix="pumpfleet-fleet-feed-"))
    try:
        _timed(args, batches, warm, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _timed(args: argparse.Namespace, batches: list[Any], warm: int, scratch: Path) -> None:
    from pumpfleet.fleet_store import FleetDB
    from serve_apps.fleet_feed import FleetFeed, cloud_rows

    floor = Floor(scratch / "floor.db")
    ingest_db = FleetDB(f"sqlite:///{scratch / 'ingest.db'}")
    feed_db = FleetDB(f"sqlite:///{scratch / 'feed.db'}")
    stop = threading.Event()
    feed = FleetFeed(feed_db, stop, max_rows=10**9, explain_per_batch=args.explain)

    def rows(groups: list[Any], budget: int) -> list[Any]:
        left = [budget]
        return [r for c, m, w in groups for r in cloud_rows(c, m, w, left)]

    def drain(groups: list[Any]) -> None:
        for c, m, w in groups:
            job = lambda db, budget, c=c, m=m, w=w: cloud_rows(c, m, w, budget)  # noqa: E731
            feed.offer(job, len(c["pump_id"]))
        assert feed.drain(timeout=600), "the feed did not drain"

    for groups in batches[:warm]:  # the pumps known, the sick ones' alerts open
        ingest_db.ingest(rows(groups, 0))
        drain(groups)
    flagged, explained = [], []
    arms: dict[str, Callable[[list[Any], list[Any]], object]] = {
        "floor: sqlite3 executemany of the score rows": lambda g, made: floor.write(made),
        "rows": lambda g, made: rows(g, 0),
        "rows + explanations": lambda g, made: explained.append(
            sum(r.drivers is not None for r in rows(g, args.explain))
        ),
        "FleetDB.ingest (SQLite)": lambda g, made: ingest_db.ingest(made),
        "drain: rows, explanations, ingest": lambda g, made: drain(g),
    }
    cpu: dict[str, list[float]] = {k: [] for k in arms}
    wall: dict[str, list[float]] = {k: [] for k in arms}
    for groups in batches[warm:]:
        threshold = groups[0][1].spec.alert_threshold
        flagged.append(sum(int(np.sum(np.asarray(c["failure_probability"]) >= threshold))
                           for c, _, _ in groups))  # fmt: skip
        made = rows(groups, 0)  # the rows the floor and ingest write, made beforehand
        for name, fn in arms.items():
            t, c = time.perf_counter(), time.process_time()
            fn(groups, made)
            wall[name].append(time.perf_counter() - t)
            cpu[name].append(time.process_time() - c)
    stop.set()
    ms = {k: statistics.median(v) * 1e3 for k, v in cpu.items()}
    per = 1000 / args.batch
    floor_name = next(iter(arms))
    explain_ms = max(0.0, ms["rows + explanations"] - ms["rows"])
    table = [
        [k, f"{ms[k]:.2f}", f"{ms[k] * per:.2f}", f"{statistics.median(wall[k]) * 1e3:.2f}",
         f"{ms[k] / ms[floor_name]:.1f}x"]
        for k in arms
    ]  # fmt: skip
    print(
        f"the fleet feed's CPU for a batch of {args.batch} windows ({WINDOW} x "
        f"{len(batches[0][0][1].spec.inputs)}) of a trained CNN, champion and challenger, "
        f"{statistics.median(flagged):.0f} of them at the alert threshold, a drain's budget "
        f"{args.explain} explained; median of {args.repeats} batches, this process's CPU "
        "(the feed's thread included)"
    )
    print(format_table(["arm", "CPU ms", "CPU ms / 1,000", "wall ms", "x floor"], table))
    print(f"explanations of a drain: {explain_ms:.2f} ms CPU")
    figures = {
        "feed_ms_per_1000": ms["drain: rows, explanations, ingest"] * per,
        "ingest_ms_per_1000": ms["FleetDB.ingest (SQLite)"] * per,
        "explain_ms_per_drain": explain_ms,
        "rows_ms_per_1000": ms["rows"] * per,
        "floor_ms_per_1000": ms[floor_name] * per,
        "feed_x_floor": ms["drain: rows, explanations, ingest"] / ms[floor_name],
    }
    ingest_db.close()
    feed_db.close()
    first, last = _history(args, [rows(g, 0) for g in batches], scratch)
    history = [
        [order, f"{first[order] * per:.2f}", f"{last[order] * per:.2f}",
         f"{last['time order'] / last[order]:.2f}x"]
        for order in first
    ]  # fmt: skip
    print(
        f"FleetDB.ingest into a long history: {args.history_drains} drains of "
        f"{args.drain_batches} batches ({args.history_drains * args.drain_batches * args.batch:,} "
        "rows), each into both databases in turn; median CPU ms per 1,000 windows"
    )
    print(
        format_table(
            ["history rows inserted", "first quarter", "last quarter", "time order / this"],
            history,
        )
    )
    figures |= {
        "history_pump_ms_per_1000": last["pump by pump"] * per,
        "history_time_ms_per_1000": last["time order"] * per,
        "history_ratio": last["time order"] / last["pump by pump"],
    }
    print(
        " ".join(f"{k}={v:.2f}" for k, v in figures.items())
        + f" explained_per_drain={statistics.median(explained):.0f}"
    )


def _history(
    args: argparse.Namespace, batches: list[list[Any]], scratch: Path
) -> tuple[dict[str, float], dict[str, float]]:
    """Median CPU ms a batch of :meth:`FleetDB.ingest`, drain after drain of
    ``--drain-batches`` batches, over the first and the last quarter of the drains: the
    score history's rows pump by pump (today's) and in time order (the ingest before).
    The scored batches are replayed, each round later in time than the one before."""
    import dataclasses

    from pumpfleet.fleet_store import FleetDB, ScoredRow

    class TimeOrder(FleetDB):
        @staticmethod
        def history(ordered: list[ScoredRow]) -> list[ScoredRow]:
            return ordered

    dbs = {
        "pump by pump": FleetDB(f"sqlite:///{scratch / 'history-pump.db'}"),
        "time order": TimeOrder(f"sqlite:///{scratch / 'history-time.db'}"),
    }
    span = len(batches) * 3600.0  # a round of the batches, in seconds
    cpu: dict[str, list[float]] = {k: [] for k in dbs}
    for d in range(args.history_drains):
        drain = [
            dataclasses.replace(r, at=r.at + (j // len(batches)) * span)
            for j in range(d * args.drain_batches, (d + 1) * args.drain_batches)
            for r in batches[j % len(batches)]
        ]
        names = list(dbs) if d % 2 == 0 else list(dbs)[::-1]  # either first in turn
        for name in names:
            c = time.process_time()
            dbs[name].ingest(drain)
            cpu[name].append((time.process_time() - c) * 1e3 / args.drain_batches)
    for db in dbs.values():
        db.close()
    q = max(1, args.history_drains // 4)
    return (
        {k: statistics.median(v[:q]) for k, v in cpu.items()},
        {k: statistics.median(v[-q:]) for k, v in cpu.items()},
    )


if __name__ == "__main__":
    main()
