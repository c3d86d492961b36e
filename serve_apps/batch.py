"""The one scoring path of the service, for a batch and for a single window (a batch of
one): decode the body once into items (pump id, class, raw window) → group them by class
and arm (:class:`ServedClass.arm_for`) → score each group through
:func:`pumpfleet.scoring.score_windows` → encode the answers as JSON or Arrow, one per
item in order, a bad item's error in its place.

A JSON body is decoded by msgspec where that gives pydantic's answer
(:mod:`serve_apps.json_decode`); the windows of JSON and Arrow items alike are formed
and checked by the one validation of readings every door applies
(:mod:`serve_apps.windows`), and every pump id by
:func:`pumpfleet.readings.check_pump_id`.
No Ray and no HTTP here: ``serve_apps/scoring.py`` calls these from its routes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np

from pumpfleet.errors import InputError
from pumpfleet.readings import check_pump_id
from pumpfleet.routing import Arm
from pumpfleet.scoring import HealthModel, Scores, score_windows
from serve_apps import arrow_ipc, json_decode
from serve_apps.errors import InvalidFields, NothingScored, split_message
from serve_apps.model_set import ServedClass, ServedModel
from serve_apps.schemas import MAX_BATCH, MAX_DECODED_BYTES, ScoreRequest
from serve_apps.windows import FlatWindows, Problems, ReadingsWindows, Windows
from serve_apps.windows import checked as checked  # re-exported: the one check of windows
from serve_apps.windows import plainly_fine as plainly_fine


@dataclass(slots=True)
class Items:
    """A decoded body: per item, in order, its pump id and class; where their windows
    come from; and the errors of items that cannot be scored (filled in as they are
    found: decoding, routing, cutting windows)."""

    pump_id: list[str | None]
    pump_class: list[str | None]
    windows: Windows
    errors: Problems

    def __len__(self) -> int:
        return len(self.pump_id)


# --- decode ----------------------------------------------------------------------------


def one(req: ScoreRequest) -> Items:
    """A single ``/v1/score`` request (validated by FastAPI) as a batch of one."""
    return Items([req.pump_id], [req.pump_class], ReadingsWindows([req.readings]), {})


def decode_json(body: bytes, fast: bool = True) -> Items:
    """A JSON batch (``{"items": [...]}``), each item checked as a ``/v1/score`` body;
    InvalidFields if the body itself is not a batch. msgspec decodes what it can prove
    valid and pydantic decides the rest (:mod:`serve_apps.json_decode`): every answer,
    and every error's words, are those of pydantic alone (``fast=False``)."""
    found = json_decode.decode(body) if fast else None
    ids, classes, readings, errors = found or json_decode.decode_pydantic(body)
    return Items(ids, classes, ReadingsWindows(readings), errors)


def arrow_table(body: bytes, max_decoded_bytes: int = MAX_DECODED_BYTES) -> Any:
    """The Arrow batch's table, read within ``max_decoded_bytes`` decoded
    (:func:`serve_apps.arrow_ipc.read_stream`: BodyTooLarge over it), its three columns
    checked (InvalidFields naming one)."""
    import pyarrow as pa

    table = arrow_ipc.read_stream(body, MAX_BATCH, max_decoded_bytes)
    missing = [c for c in ("pump_id", "pump_class", "window") if c not in table.column_names]
    if missing:
        raise InvalidFields.at(missing[0], "column required in the Arrow batch")
    if table.num_rows == 0 or table.num_rows > MAX_BATCH:
        raise InvalidFields.at("window", f"expected 1 to {MAX_BATCH} rows, got {table.num_rows}")
    for name in ("pump_id", "pump_class"):
        kind = table.schema.field(name).type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            raise InvalidFields.at(name, f"a string per row, not {kind}")
    kind = table.schema.field("window").type
    listed = pa.types.is_list(kind) or pa.types.is_fixed_size_list(kind)
    if not listed or not (
        pa.types.is_floating(kind.value_type) or pa.types.is_integer(kind.value_type)
    ):
        raise InvalidFields.at("window", f"a list of numbers per row, not {kind}")
    return table


def arrow_flat(column: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A list column as one float64 buffer (a null reading as NaN), each row's length (0
    for a null window) and which rows have a window."""
    flat = column.flatten().to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    valid = column.is_valid().to_numpy(zero_copy_only=False)
    lengths = np.where(valid, column.value_lengths().fill_null(0).to_numpy(), 0)
    return flat, lengths.astype(np.int64), valid


def decode_arrow(body: bytes, max_decoded_bytes: int = MAX_DECODED_BYTES) -> Items:
    """An Arrow IPC batch (columns ``pump_id``, ``pump_class``, ``window``), decoded
    within ``max_decoded_bytes``; a row without an id, class or window, or with an id
    that is no pump id, gets its error by index."""
    table = arrow_table(body, max_decoded_bytes)
    n = table.num_rows
    ids: list[str | None] = table.column("pump_id").to_pylist()
    classes: list[str | None] = table.column("pump_class").to_pylist()
    flat, lengths, valid = arrow_flat(table.column("window").combine_chunks())
    errors: Problems = {}
    for i in range(n):
        if not ids[i] or not classes[i] or not valid[i]:
            errors[i] = (["pump_id"], "pump_id, pump_class and window required")
            continue
        try:
            check_pump_id(ids[i])
        except InputError as e:
            errors[i] = split_message(e)
            ids[i] = None  # not echoed back: it may be a megabyte
    return Items(ids, classes, FlatWindows(flat, lengths), errors)


# --- group and score --------------------------------------------------------------------


@dataclass(slots=True)
class Group:
    """Items of one class that one arm's model scores together."""

    pump_class: str
    arm: Arm
    served: ServedClass
    model: ServedModel
    rows: list[int]  # the items' indices
    windows: np.ndarray  # their raw windows [k, W, C + S]


def group(items: Items, classes: Mapping[str, ServedClass], salt: str) -> list[Group]:
    """The items without an error, grouped by class and arm, each with its windows cut
    for its model; an item of an unserved class, or whose window does not fit its
    model, gets an error in ``items.errors`` instead."""
    by_class: dict[str, list[int]] = {}
    for i, cls in enumerate(items.pump_class):
        if i not in items.errors and cls is not None:
            by_class.setdefault(cls, []).append(i)
    groups = []
    for cls, rows in by_class.items():
        served = classes.get(cls)
        if served is None:
            known = ", ".join(sorted(classes)) or "none"
            for i in rows:
                items.errors[i] = (["pump_class"], f"unknown or unserved class (served: {known})")
            continue
        arms: dict[Arm, list[int]] = {}
        for i in rows:
            arms.setdefault(served.arm_for(items.pump_id[i] or "", salt), []).append(i)
        for arm, members in arms.items():
            model = served.arms[arm]
            ok, windows, bad = items.windows.take(members, model.spec, cls)
            items.errors.update(bad)
            if len(ok):
                groups.append(Group(cls, arm, served, model, ok, windows))
    return groups


def score(g: Group) -> Scores:
    """A group's windows through the one scoring path, with its class's health model."""
    return score_windows(g.windows, g.model.spec, g.model.run, g.served.health)


def health_columns(health: HealthModel | None, scores: Scores, k: int) -> dict[str, list[Any]]:
    """The health score, flag and model version of ``k`` windows (None: not scored)."""
    scored = scores.health
    if health is None or scored is None:
        return {"health_score": [None] * k, "anomaly": [None] * k, "anomaly_version": [None] * k}
    return {
        "health_score": [
            float(x) if ok else None for x, ok in zip(scored.scores, scored.ok, strict=True)
        ],
        "anomaly": [bool(x) if ok else None for x, ok in zip(scored.flags, scored.ok, strict=True)],
        "anomaly_version": [health.version if ok else None for ok in scored.ok],
    }


class Answers:
    """Each scored group's answers, and where each item's answer is: nothing is copied
    per item until the answer is encoded."""

    def __init__(self, n: int) -> None:
        self.groups: list[tuple[Group, Scores, Mapping[str, list[Any]]]] = []
        self.where: list[tuple[int, int] | None] = [None] * n  # item → (group, position)

    def fill(self, g: Group, scores: Scores, health: Mapping[str, list[Any]]) -> None:
        """A group's scores (``health``: its :func:`health_columns`)."""
        at = len(self.groups)
        self.groups.append((g, scores, health))
        for j, i in enumerate(g.rows):
            self.where[i] = (at, j)


# --- encode -------------------------------------------------------------------------


def error_list(items: Items) -> list[dict[str, Any]]:
    """Every item's error, by index."""
    return [{"index": i, "loc": loc, "msg": msg} for i, (loc, msg) in sorted(items.errors.items())]


def result(items: Items, answers: Answers, i: int) -> dict[str, Any] | None:
    """Item ``i``'s answer, with the fields of a ``/v1/score`` answer (None: not scored)."""
    where = answers.where[i]
    if where is None:
        return None
    g, scores, health = answers.groups[where[0]]
    j = where[1]
    return {
        "pump_id": items.pump_id[i],
        "pump_class": g.pump_class,
        "arm": str(g.arm),
        "model_version": g.model.version,
        "rul_hours": float(scores.rul.rul_hours[j]),
        "failure_probability": float(scores.rul.failure_probability[j]),
        "alert": bool(scores.rul.alert[j]),
        "health_score": health["health_score"][j],
        "anomaly": health["anomaly"][j],
        "anomaly_version": health["anomaly_version"][j],
    }


def _checked(items: Items, answers: Answers) -> list[dict[str, Any]]:
    errors = error_list(items)
    if not answers.groups:
        raise NothingScored(errors)
    return errors


def encode_json(items: Items, answers: Answers) -> dict[str, Any]:
    """``{"results": [answer or null per item], "errors": [...]}``; NothingScored if no
    item was scored. Each group's columns become Python values at once (``tolist``),
    the same values :func:`result` gives one item."""
    errors = _checked(items, answers)
    results: list[dict[str, Any] | None] = [None] * len(items)
    for g, scores, health in answers.groups:
        arm, version = str(g.arm), g.model.version
        for i, rul, prob, alert, score, anomaly, anomaly_version in zip(
            g.rows,
            scores.rul.rul_hours.tolist(),
            scores.rul.failure_probability.tolist(),
            scores.rul.alert.tolist(),
            health["health_score"],
            health["anomaly"],
            health["anomaly_version"],
            strict=True,
        ):
            results[i] = {
                "pump_id": items.pump_id[i],
                "pump_class": g.pump_class,
                "arm": arm,
                "model_version": version,
                "rul_hours": rul,
                "failure_probability": prob,
                "alert": alert,
                "health_score": score,
                "anomaly": anomaly,
                "anomaly_version": anomaly_version,
            }
    return {"results": results, "errors": errors}


def encode_json_body(items: Items, answers: Answers) -> bytes:
    """:func:`encode_json` as the body of the answer: msgspec writes it in a tenth of
    ``json.dumps``'s time, the same bytes as Starlette's JSONResponse."""
    return msgspec.json.encode(encode_json(items, answers))


def encode_arrow(items: Items, answers: Answers) -> bytes:
    """The answer as an Arrow IPC stream: one row per item in order, ``error`` set on a
    bad one (its pump id kept where it had one); NothingScored if no item was scored."""
    import pyarrow as pa

    _checked(items, answers)
    n = len(items)
    text = {k: np.full(n, None, dtype=object) for k in ("pump_class", "arm", "model_version")}
    flags = {k: np.full(n, None, dtype=object) for k in ("alert", "anomaly", "anomaly_version")}
    rul, prob, health_score = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    scored = np.zeros(n, dtype=bool)
    for g, scores, health in answers.groups:
        idx = np.asarray(g.rows)
        scored[idx] = True
        text["pump_class"][idx], text["arm"][idx] = g.pump_class, str(g.arm)
        text["model_version"][idx] = g.model.version
        rul[idx], prob[idx] = scores.rul.rul_hours, scores.rul.failure_probability
        flags["alert"][idx] = list(scores.rul.alert)
        health_score[idx] = [np.nan if v is None else v for v in health["health_score"]]
        flags["anomaly"][idx] = health["anomaly"]
        flags["anomaly_version"][idx] = health["anomaly_version"]
    why = [
        f"{'.'.join(map(str, e[0]))}: {e[1]}" if (e := items.errors.get(i)) else None
        for i in range(n)
    ]
    table = pa.table(
        {
            "pump_id": pa.array(items.pump_id, pa.string()),
            **{k: pa.array(text[k], pa.string()) for k in ("pump_class", "arm", "model_version")},
            "rul_hours": pa.array(rul, mask=~scored),
            "failure_probability": pa.array(prob, mask=~scored),
            "alert": pa.array(flags["alert"], pa.bool_()),
            "health_score": pa.array(health_score, mask=np.isnan(health_score)),
            "anomaly": pa.array(flags["anomaly"], pa.bool_()),
            "anomaly_version": pa.array(flags["anomaly_version"], pa.string()),
            "error": pa.array(why, pa.string()),
        }
    )
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())
