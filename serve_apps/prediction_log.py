"""The prediction log's rows of a scored group, built in one place as columns of the
prediction record (:mod:`pumpfleet.records`), and the challenger's shadow scores that
complete them in shadow mode.

A big group goes to the log as one table (:func:`pumpfleet.records.to_table`); a small
one as record rows, which the log's flush thread turns into a table by the same
function: one record's table costs far more than scoring its window does, and single
windows are the hot path.

A row's ``request_id`` is the id the front door gave the request
(``x-pumpfleet-request-id``, :class:`serve_apps.front_door.RequestIds`), so that a request the door
retried on another replica after its first one died is logged under one id, however
many replicas logged it; without one (a replica's own port), a fresh one.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

from pumpfleet import records
from pumpfleet.features import window_summary
from pumpfleet.fleet_drift import setting_means
from pumpfleet.scoring import Scores, score_windows
from serve_apps.batch import Group, Items
from serve_apps.front_door import REQUEST_ID
from serve_apps.model_set import ServedModel

log = logging.getLogger(__name__)

# Groups of at least this many rows are logged as one table on the request path.
TABLE_ROWS = 64


class Log(Protocol):
    """Where rows go: :class:`serve_apps.durable_log.DurableLog` (or
    :class:`pumpfleet.predlog.PredictionLog`)."""

    def extend(self, rows: list[dict[str, Any]]) -> None: ...
    def extend_table(self, table: Any) -> None: ...


def log_columns(
    g: Group,
    items: Items,
    scores: Scores,
    health: Mapping[str, list[Any]],
    latency_ms: float,
    now_ns: int | None = None,
) -> dict[str, Any]:
    """A group's prediction records, column by column (``health``: its health columns):
    who, which model, what it said, how long it took, and each input channel's and
    operating setting's mean over the window (``in_<name>``, what the drift monitor
    compares; the settings show a new operating regime)."""
    k = len(g.rows)
    # a group's rows share it: a uuid per row costs more
    batch = f"{REQUEST_ID.get() or uuid.uuid4().hex}-{g.pump_class}-{g.arm}"
    now = time.time_ns() if now_ns is None else now_ns
    summary = window_summary(g.windows, g.model.spec) | setting_means(g.windows, g.model.spec)
    return {
        "request_id": [batch] if k == 1 else [f"{batch}-{j}" for j in range(k)],
        "timestamp": np.array([now] * k, dtype="datetime64[ns]"),
        "pump_id": [items.pump_id[i] for i in g.rows],
        "pump_class": [g.pump_class] * k,
        "arm": [str(g.arm)] * k,
        "model_version": [g.model.version] * k,
        "rul_hours": scores.rul.rul_hours,
        "failure_probability": scores.rul.failure_probability,
        "latency_ms": [latency_ms] * k,
        **health,
        **{f"{records.INPUT_PREFIX}{c}": v for c, v in summary.items()},
    }


def shadow_columns(challenger: ServedModel, g: Group, items: Items) -> dict[str, Any]:
    """The challenger's scores of a group the champion answered: of the same windows
    when it reads the same inputs, else of windows cut for its own."""
    spec, champion = challenger.spec, g.model.spec
    if spec.inputs == champion.inputs and spec.window == champion.window:
        windows = g.windows
    else:
        _, windows, errors = items.windows.take(g.rows, spec, g.pump_class, strict=False)
        if errors:
            raise ValueError(f"{len(errors)} windows do not fit v{challenger.version}")
    rul = score_windows(windows, spec, challenger.run).rul
    return {
        "shadow_version": [challenger.version] * len(g.rows),
        "shadow_rul_hours": rul.rul_hours,
        "shadow_failure_probability": rul.failure_probability,
    }


def write(log_: Log, columns: Mapping[str, Any], k: int) -> None:
    """``k`` records (:func:`log_columns`) into the log."""
    if k >= TABLE_ROWS:
        log_.extend_table(records.to_table(columns, k))
    else:
        log_.extend([{name: values[j] for name, values in columns.items()} for j in range(k)])


def write_with_shadow(
    log_: Log, columns: dict[str, Any], challenger: ServedModel, g: Group, items: Items
) -> None:
    """Shadow mode, off the response path: the challenger's scores beside the champion's,
    then into the log (without them if the challenger fails: the answers are sent)."""
    try:
        columns |= shadow_columns(challenger, g, items)
    except Exception as e:  # the log says what went wrong; the rows are logged anyway
        log.warning("shadow scoring of %d windows failed: %s", len(g.rows), e)
    write(log_, columns, len(g.rows))
