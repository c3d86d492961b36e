"""What feeds the fleet state in a replica, off the request path: the scored rows of
cloud scoring (the same columns the prediction log is written from), edge uploads and
feedback go into a bounded queue, and one thread writes them to the fleet database.
Scoring never waits for it: past ``queue_rows`` rows waiting, new ones are dropped and
counted (``pumpfleet_fleet_rows_dropped``), and a database that fails is logged and
counted (``pumpfleet_loop_errors{loop="fleet feed"}``), never raised to a request.

The windows of a cloud batch that reach their class's alert threshold are explained
here too (occlusion, :func:`pumpfleet.explain.occlusion_many`), at most
``explain_per_batch`` of a drain, so the work list says which sensors drive each risky
pump: the first ones in the order they came, all of a drain's windows of one model in
one scoring call (:class:`Explanations`) before the drain's rows are written. A model
that fails to explain leaves its rows without drivers (logged, and counted as the feed's
error): they still go in.

A drain follows the last one by at least ``gather_seconds``: under a stream of single
windows a drain held a few rows, so the database committed and the budget explained
nearly every risky window, several per request, on the replica's cores (a third of a
replica's CPU under load, with the GIL held against its event loop). The fleet state is
that much later; the budget and the queue's bound are unchanged.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from pumpfleet import explain
from pumpfleet.fleet_store import FleetDB, ScoredRow
from pumpfleet.records import PredictionRecord

log = logging.getLogger(__name__)

Job = Callable[[FleetDB, list[int]], list[ScoredRow]]  # (db, explain budget) -> rows
TOP_DRIVERS = 3


def drivers_of(risk_by_channel: Mapping[str, float], n: int = TOP_DRIVERS) -> list[dict[str, Any]]:
    """The channels that raised the risk most (positive attributions), largest first."""
    ranked = sorted(risk_by_channel.items(), key=lambda kv: -kv[1])
    return [{"sensor": c, "weight": round(float(w), 6)} for c, w in ranked[:n] if w > 0]


class Explanations(list[int]):
    """A drain's explanation budget, ``self[0]`` the windows it may still explain (what a
    job is handed), and the windows chosen so far: :meth:`settle` explains them, one
    scoring call per model, and gives their rows the drivers found."""

    def __init__(self, budget: int) -> None:
        super().__init__([budget])
        # id(model) -> (model, its chosen windows, where each one's row is)
        self._asked: dict[int, tuple[Any, list[np.ndarray], list[tuple[list[ScoredRow], int]]]]
        self._asked = {}

    def ask(self, model: Any, window: np.ndarray, rows: list[ScoredRow], at: int) -> None:
        """Explain ``window`` (scored by ``model``) for the row ``rows[at]``."""
        _, windows, places = self._asked.setdefault(id(model), (model, [], []))
        windows.append(window)
        places.append((rows, at))

    def settle(self) -> int:
        """Explain every window asked for and set its row's drivers; returns how many
        models failed to explain theirs (logged; their rows keep no drivers: the rows
        still go in, an explanation is not worth a drain's fleet state)."""
        failed = 0
        try:
            for model, windows, places in self._asked.values():
                try:
                    found = explained(model, np.stack(windows))
                except Exception:
                    log.exception("explaining %d risky windows failed; no drivers", len(windows))
                    failed += 1
                    continue
                for (rows, at), drivers in zip(places, found, strict=True):
                    rows[at] = dataclasses.replace(rows[at], drivers=drivers)
        finally:
            self._asked.clear()
        return failed


def explained(model: Any, windows: np.ndarray) -> list[list[dict[str, Any]]]:
    """The drivers of each of ``windows`` by ``model``: occlusion, in one scoring call."""
    scorer = explain.rul_scorer(model.run, model.spec)
    found = explain.occlusion_many(scorer, windows, model.spec)
    return [
        drivers_of(dict(zip(a.channels, a.risk_by_channel.tolist(), strict=True))) for a in found
    ]


def cloud_rows(
    columns: Mapping[str, Any], model: Any, windows: np.ndarray, budget: list[int]
) -> list[ScoredRow]:
    """A scored group's prediction-log columns as fleet rows; the windows at or above
    the class's threshold are explained, in order, while ``budget[0]`` lasts: now (one
    scoring call for the group), or when the drain settles, where ``budget`` is its
    :class:`Explanations`."""
    spec = model.spec
    stamps = np.asarray(columns["timestamp"]).astype("datetime64[ns]").astype(np.int64)
    risk = [float(x) for x in columns["failure_probability"]]
    rul = [float(x) for x in columns["rul_hours"]]
    health = columns.get("health_score") or [None] * len(risk)
    anomaly = columns.get("anomaly") or [None] * len(risk)
    out = []
    for j, pump_id in enumerate(columns["pump_id"]):
        out.append(
            ScoredRow(
                pump_id=str(pump_id),
                pump_class=str(columns["pump_class"][j]),
                at=int(stamps[j]) / 1e9,
                rul_hours=rul[j],
                failure_probability=risk[j],
                model_version=str(columns["model_version"][j]),
                arm=str(columns["arm"][j]),
                health_score=None if health[j] is None else float(health[j]),
                anomaly=None if anomaly[j] is None else bool(anomaly[j]),
                threshold=spec.alert_threshold,
                horizon_hours=spec.horizon_hours,
            )
        )
    chosen = []
    for j, r in enumerate(risk):
        if budget[0] <= 0:
            break
        if r >= spec.alert_threshold:
            budget[0] -= 1
            chosen.append(j)
    if isinstance(budget, Explanations):
        for j in chosen:
            budget.ask(model, windows[j], out, j)
    elif chosen:
        found = explained(model, np.asarray(windows)[chosen])
        for j, drivers in zip(chosen, found, strict=True):
            out[j] = dataclasses.replace(out[j], drivers=drivers)
    return out


def edge_rows(
    device_id: str,
    site: str | None,
    records: Sequence[PredictionRecord],
    specs: Mapping[str, Any],
) -> list[ScoredRow]:
    """An edge upload's records as fleet rows (the class's threshold and horizon from the
    model the cloud serves for it, where it does; the device's explanation its drivers)."""
    out = []
    for r in records:
        spec = specs.get(r.pump_class)
        drivers = None
        if r.explanation is not None:
            drivers = drivers_of(r.explanation.risk_by_channel)
        out.append(
            ScoredRow(
                pump_id=r.pump_id,
                pump_class=r.pump_class,
                at=r.timestamp / 1e9,
                rul_hours=r.rul_hours,
                failure_probability=r.failure_probability,
                model_version=r.model_version,
                arm=str(r.arm),
                health_score=r.health_score,
                anomaly=r.anomaly,
                site=site,
                device_id=device_id,
                drivers=drivers,
                threshold=None if spec is None else spec.alert_threshold,
                horizon_hours=None if spec is None else spec.horizon_hours,
            )
        )
    return out


class FleetFeed:
    """The bounded queue of jobs (each a function of the database giving rows, or doing
    its own write) and the thread that drains it into ``db``."""

    def __init__(
        self,
        db: FleetDB,
        stop: threading.Event,
        max_rows: int,
        explain_per_batch: int,
        on_error: Callable[[str], None] = lambda loop: None,
        on_drop: Callable[[int], None] = lambda n: None,
        gather_seconds: float = 0.0,
    ) -> None:
        self.db = db
        self.max_rows = max_rows
        self.explain_per_batch = explain_per_batch
        self.gather_seconds = gather_seconds
        self.dropped = 0
        self._jobs: deque[tuple[Job, int]] = deque()
        self._rows = 0
        self._cv = threading.Condition()
        self._stop = stop
        self._busy = False
        self._on_error = on_error
        self._on_drop = on_drop
        self._thread = threading.Thread(target=self._run, name="fleet-feed", daemon=True)
        self._thread.start()

    def offer(self, job: Job, rows: int) -> bool:
        """Queue a job of ``rows`` rows, or drop it (counted) when the queue is full."""
        with self._cv:
            if self._rows + rows > self.max_rows:
                self.dropped += rows
                self._on_drop(rows)
                return False
            self._jobs.append((job, rows))
            self._rows += rows
            self._cv.notify()
        return True

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until every queued job is written (tests, a graceful stop)."""
        with self._cv:
            return self._cv.wait_for(lambda: not self._jobs and not self._busy, timeout)

    def _take(self) -> list[Job]:
        with self._cv:
            self._cv.wait_for(lambda: bool(self._jobs) or self._stop.is_set(), timeout=0.5)
            jobs = [job for job, _ in self._jobs]
            self._jobs.clear()
            self._rows = 0
            self._busy = bool(jobs)
            return jobs

    def _run(self) -> None:
        while not self._stop.is_set() or self._jobs:
            jobs = self._take()
            if not jobs:
                continue
            budget = Explanations(self.explain_per_batch)
            rows: list[list[ScoredRow]] = []  # each job's, drivers given when settled
            try:
                for job in jobs:
                    if rows and getattr(job, "writes", False):  # keep the order of events
                        self._write(rows, budget)
                        rows = []
                    rows.append(job(self.db, budget))
                self._write(rows, budget)
            except Exception:  # a database that is down: logged and counted, scoring goes on
                n = sum(map(len, rows))
                log.exception("the fleet feed failed to write %d rows; carrying on", n)
                self._on_error("fleet feed")
            finally:
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()
            if self.gather_seconds > 0:  # what comes meanwhile goes in the next drain
                self._stop.wait(self.gather_seconds)

    def _write(self, rows: list[list[ScoredRow]], budget: Explanations) -> None:
        if budget.settle():
            self._on_error("fleet feed")
        self.db.ingest([r for job in rows for r in job])
