"""The prediction record: one scored window, as the Serve replicas log it, the edge agent
stores and uploads it, the upload handler stores it and the monitor reads it. One pydantic
model for JSON (an edge upload's records) and one Arrow schema for Parquet (the prediction
log), defined here once.

A record also carries the mean of each raw input channel over its window, as columns
``in_<channel>`` (what the drift monitor compares with the training reference); those are
the only columns beyond the fixed ones.

pydantic and the standard library at import (pyarrow where a table is made): the device
imports it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pumpfleet.errors import InputError

INPUT_PREFIX = "in_"
NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_INPUT = re.compile(r"^in_[a-z][a-z0-9_]{0,63}$")
# No pump reads beyond these: a value past them is a fault or an attack, not a reading.
MAX_RUL_HOURS = 1e6
MAX_INPUT = 1e9
# 1970 to 2100, in nanoseconds: a time outside it is a mistake (and overflows datetime64).
MAX_TIMESTAMP_NS = 4_102_444_800 * 10**9

Finite = Annotated[float, Field(allow_inf_nan=False)]
Arm = Literal["champion", "challenger", "edge"]
Channel = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")]


class TimeBlock(BaseModel):
    """A block of a window's time steps (``start`` inclusive, ``end`` exclusive, 0 the
    oldest) of one channel, and how much it raised the failure risk."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    channel: Channel
    start: int = Field(ge=0)
    end: int = Field(ge=1)
    risk: Finite


class Explanation(BaseModel):
    """What drives an alert: occlusion attributions (:mod:`pumpfleet.explain`) of the
    window's failure risk and RUL per channel, its top channels and time blocks, and the
    milliseconds it took."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    top: list[Channel] = Field(max_length=16)
    risk_by_channel: dict[Channel, Finite]
    rul_hours_by_channel: dict[Channel, Finite]
    top_blocks: list[TimeBlock] = Field(max_length=16)
    block_steps: int = Field(ge=1)
    ms: Finite = Field(ge=0)


class PredictionRecord(BaseModel):
    """One scored window. ``timestamp`` is nanoseconds since the epoch (UTC) of the
    window's last reading on the device, of the answer in the cloud."""

    model_config = ConfigDict(extra="allow", frozen=True)

    request_id: str = Field(min_length=1, max_length=256)
    timestamp: int = Field(ge=0, le=MAX_TIMESTAMP_NS)
    pump_id: str = Field(min_length=1, max_length=128)
    pump_class: str = Field(pattern=NAME)
    arm: Arm = "edge"  # what a device uploads, where it says nothing
    model_version: str = Field(pattern=r"^[0-9]{1,18}$")
    rul_hours: Finite = Field(ge=0, le=MAX_RUL_HOURS)
    failure_probability: Finite = Field(ge=0, le=1)
    latency_ms: Finite = Field(default=0.0, ge=0)
    alert: bool | None = None
    shadow_version: str | None = Field(default=None, pattern=r"^[0-9]{1,18}$")
    shadow_rul_hours: Finite | None = Field(default=None, ge=0, le=MAX_RUL_HOURS)
    shadow_failure_probability: Finite | None = Field(default=None, ge=0, le=1)
    health_score: Finite | None = None
    anomaly: bool | None = None
    anomaly_version: str | None = Field(default=None, pattern=r"^[0-9]{1,18}$")
    # the edge: which compiled variant scored it, and (set by the cloud) which device
    variant: str | None = Field(default=None, pattern=NAME)
    device_id: str | None = Field(default=None, pattern=NAME)
    # an edge alert's drivers, where the device explained it (pumpfleet.explain)
    explanation: Explanation | None = None

    @model_validator(mode="before")
    @classmethod
    def _inputs_only(cls, data: Any) -> Any:
        """Beyond the fixed fields, only ``in_<channel>`` means: finite numbers or null."""
        if isinstance(data, Mapping):
            for key, value in data.items():
                if key in cls.model_fields:
                    continue
                if not isinstance(key, str) or not _INPUT.match(key):
                    raise ValueError(f"{key!r} is not a field of a prediction record")
                if value is not None and (
                    isinstance(value, bool)
                    or not isinstance(value, int | float)
                    or not math.isfinite(value)
                    or abs(value) > MAX_INPUT
                ):
                    shown = repr(value)[:40]
                    raise ValueError(f"{key}: a finite number (|x| <= 1e9) or null, not {shown}")
        return data

    @field_validator("timestamp", mode="before")
    @classmethod
    def _no_bool(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("a number of nanoseconds, not a boolean")
        return value

    def inputs(self) -> dict[str, float | None]:
        """The record's ``in_<channel>`` means."""
        return dict(self.model_extra or {})


# Parquet column types of the fixed fields, in order; in_<channel> columns are float64.
def arrow_schema(inputs: Iterable[str] = (), explanation: bool = False) -> Any:
    """The prediction log's Arrow schema, with float64 columns ``inputs`` (``in_*``)
    and, where ``explanation``, the records' explanations as JSON text."""
    import pyarrow as pa

    fixed = [
        ("request_id", pa.string()),
        ("timestamp", pa.timestamp("ns")),
        ("pump_id", pa.string()),
        ("pump_class", pa.string()),
        ("arm", pa.string()),
        ("model_version", pa.string()),
        ("rul_hours", pa.float64()),
        ("failure_probability", pa.float64()),
        ("latency_ms", pa.float64()),
        ("alert", pa.bool_()),
        ("shadow_version", pa.string()),
        ("shadow_rul_hours", pa.float64()),
        ("shadow_failure_probability", pa.float64()),
        ("health_score", pa.float64()),
        ("anomaly", pa.bool_()),
        ("anomaly_version", pa.string()),
        ("variant", pa.string()),
        ("device_id", pa.string()),
    ]
    if explanation:
        fixed.append(("explanation", pa.string()))
    return pa.schema([*fixed, *((c, pa.float64()) for c in sorted(inputs))])


FIELDS = tuple(PredictionRecord.model_fields)


def _explanation_text(values: Any) -> list[str | None] | None:
    """The explanation column as JSON text (None: no row has one)."""
    if hasattr(values, "to_pylist"):  # an Arrow array
        values = values.to_pylist()
    if values is None or isinstance(values, str) or not hasattr(values, "__iter__"):
        return None
    out = [
        v
        if v is None or isinstance(v, str)
        else json.dumps(v.model_dump() if isinstance(v, BaseModel) else v, sort_keys=True)
        for v in values
    ]
    return out if any(v is not None for v in out) else None


def to_table(columns: Mapping[str, Any], rows: int) -> Any:
    """The prediction log's table of ``rows`` records from ``columns`` (name → values or
    an Arrow array); a fixed field that is absent is null throughout. Columns that are
    neither fixed fields nor ``in_*`` are refused (InputError naming the column)."""
    import pyarrow as pa

    unknown = [c for c in columns if c not in FIELDS and not _INPUT.match(c)]
    if unknown:
        raise InputError(f"{unknown[0]}: not a column of the prediction log")
    explained = _explanation_text(columns.get("explanation"))
    schema = arrow_schema((c for c in columns if c not in FIELDS), explained is not None)
    arrays = []
    for field in schema:
        values = explained if field.name == "explanation" else columns.get(field.name)
        if values is None:
            arrays.append(pa.nulls(rows, field.type))
            continue
        try:
            arrays.append(pa.array(values, field.type, from_pandas=True))
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            raise InputError(f"{field.name}: {e}") from None
    return pa.Table.from_arrays(arrays, schema=schema)


def rows_to_table(rows: Sequence[Mapping[str, Any]]) -> Any:
    """The prediction log's table of record dicts (``timestamp`` in ns or datetime64)."""
    names: dict[str, None] = {}
    for r in rows:
        names.update(dict.fromkeys(r))
    return to_table({n: [r.get(n) for r in rows] for n in names}, len(rows))


def validate(records: list[Any]) -> list[PredictionRecord]:
    """Records from JSON objects; InputError naming the first bad record and field."""
    out = []
    for i, r in enumerate(records):
        try:
            out.append(PredictionRecord.model_validate(r))
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise InputError(f"records.{i}{'.' + where if where else ''}: {first['msg']}") from None
    return out


def feedback_table(rows: Sequence[Mapping[str, Any]]) -> Any:
    """The feedback log's table: observed outcomes (``POST /v1/feedback``) per pump."""
    import pyarrow as pa

    schema = pa.schema(
        [
            ("pump_id", pa.string()),
            ("pump_class", pa.string()),
            ("observed_at", pa.timestamp("ns")),
            ("failed_at", pa.timestamp("ns")),
            ("rul_hours", pa.float64()),
        ]
    )
    unknown = sorted({k for r in rows for k in r} - set(schema.names))
    if unknown:
        raise InputError(f"{unknown[0]}: not a column of the feedback log")
    return pa.Table.from_pylist([dict(r) for r in rows], schema=schema)
