"""Why a pump alerts, on the device: occlusion attributions of the alert's window by the
code the cloud uses (:func:`pumpfleet.explain.occlusion`, scoring every occluded copy
through :func:`pumpfleet.scoring.score_rul` with the model that scored the window), so the
drivers a crew sees on site are those the cloud would show for the same window.

An explanation scores ``1 + C + B x C`` copies of the window (C channels, B = 4 time
blocks) as one batch. Within a stored batch, alerts are explained newest first per pump:
a pump whose alarm was just raised, then one whose last explanation is older than
``explain_every_seconds``; and no more once the batch has spent ``explain_budget_ms``.
An alert not explained (budget spent, or explained a moment ago) is stored and sent
without one, and counted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from pydantic import ValidationError

from edge_agent.predict import Batch
from pumpfleet.errors import one_line
from pumpfleet.explain import occlusion, rul_scorer, summary
from pumpfleet.records import Explanation

log = logging.getLogger(__name__)


class Explainer:
    def __init__(
        self,
        budget_ms: float,
        every_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.budget_ms = budget_ms
        self.every_seconds = every_seconds
        self.clock = clock
        self.last: dict[str, float] = {}  # pump → when its last alert was explained
        self.alarmed: dict[str, bool] = {}  # pump → whether its last window alerted

    def explain(self, batch: Batch) -> dict[str, int]:
        """Add explanations to the batch's alert records (in place, before they are
        stored); how many were explained and how many alerts went without."""
        started = time.perf_counter()
        now = self.clock()
        wanted: list[tuple[bool, int]] = []  # (raised now, record index), latest per pump
        latest: dict[str, int] = {}
        for i, r in enumerate(batch.records):
            pump = r["row"]["pump_id"]
            raised = r["alert"] and not self.alarmed.get(pump, False)
            if raised:
                wanted.append((True, i))
            self.alarmed[pump] = bool(r["alert"])
            if r["alert"]:
                latest[pump] = i
        raised = {batch.records[i]["row"]["pump_id"] for _, i in wanted}
        for pump, i in latest.items():
            due = now - self.last.get(pump, -float("inf")) >= self.every_seconds
            if pump not in raised and due:
                wanted.append((False, i))
        explained = 0
        for _, i in sorted(wanted, key=lambda w: not w[0]):
            if (time.perf_counter() - started) * 1000 >= self.budget_ms:
                break
            r = batch.records[i]
            scorer, raw = batch.scorers.get(r["key"]), batch.raw.get(r["key"])
            if scorer is None or raw is None:
                continue
            t = time.perf_counter()
            try:
                a = occlusion(rul_scorer(scorer.run, scorer.spec), raw, scorer.spec)
            except Exception as e:  # the model's own errors: the alert goes without
                log.warning("explaining %s failed: %s", r["key"], e)
                continue
            ms = (time.perf_counter() - t) * 1000
            try:
                found = Explanation.model_validate(summary(a, scorer.spec.window) | {"ms": ms})
            except ValidationError as e:  # attributions the record contract refuses
                log.warning("explanation of %s not kept: %s", r["key"], one_line(e))
                continue
            r["row"]["explanation"] = found.model_dump()
            self.last[r["row"]["pump_id"]] = now
            explained += 1
        alerts = sum(bool(r["alert"]) for r in batch.records)
        return {"explained": explained, "alerts_unexplained": alerts - explained}
