"""The batch path's Arrow decoding and answer, without a server."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from pumpfleet.features import FeatureSpec
from pumpfleet.routing import Arm
from serve_apps import batch
from serve_apps.errors import InvalidFields
from serve_apps.model_set import ServedClass, ServedModel
from serve_apps.schemas import ANSWER_FIELDS

SPEC = FeatureSpec(
    pump_class="esp",
    channels=["motor_temp", "flow"],
    window=3,
    stride=1,
    interval_seconds=3600,
    rul_cap_hours=100.0,
    horizon_hours=24.0,
    mean=[80.0, 1000.0],
    std=[10.0, 100.0],
)


def stream(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def body(windows: list[Any], ids: list[Any] | None = None, kind: Any = None) -> bytes:
    n = len(windows)
    return stream(
        pa.table(
            {
                "pump_id": ids if ids is not None else [f"p{i}" for i in range(n)],
                "pump_class": ["esp"] * n,
                "window": pa.array(windows, kind or pa.list_(pa.float64())),
            }
        )
    )


def test_windows_are_cut_from_one_buffer_with_nulls_kept() -> None:
    six = [float(v) for v in range(6)]
    items = batch.decode_arrow(body([six, None, [1.0, None, 3.0, 4.0, 5.0, 6.0], [7.0]]))
    assert items.errors == {1: (["pump_id"], "pump_id, pump_class and window required")}
    ok, windows, errors = items.windows.take([0, 2, 3], SPEC, "esp")
    assert ok == [0, 2] and list(errors) == [3]
    assert errors[3] == (["window"], "expected 3 x 2 values (motor_temp, flow), got 1")
    np.testing.assert_array_equal(windows[0], np.arange(6.0).reshape(3, 2))  # time-major
    np.testing.assert_array_equal(windows[1][0], [1.0, np.nan])


def test_fixed_size_and_integer_windows_read_as_floats() -> None:
    items = batch.decode_arrow(
        body([list(range(6)), list(range(6, 12))], kind=pa.list_(pa.int32(), 6))
    )
    _, windows, _ = items.windows.take([0, 1], SPEC, "esp")
    assert windows.dtype == np.float64
    np.testing.assert_array_equal(windows[1].ravel(), np.arange(6.0, 12.0))


def test_rows_without_an_id_or_with_inf_are_refused_by_index() -> None:
    six = [1.0] * 6
    items = batch.decode_arrow(body([six, six, [*six[:5], np.inf]], ids=["a", None, "c"]))
    assert items.errors == {1: (["pump_id"], "pump_id, pump_class and window required")}
    assert items.pump_id == ["a", None, "c"]
    # the one validation of readings, where the window is cut for its model
    ok, _, errors = items.windows.take([0, 2], SPEC, "esp")
    assert ok == [0] and errors == {2: (["window", "flow"], "inf is not a reading")}


EMPTY = pa.table(
    {
        "pump_id": pa.array([], pa.string()),
        "pump_class": pa.array([], pa.string()),
        "window": pa.array([], pa.list_(pa.float64())),
    }
)


@pytest.mark.parametrize(
    ("data", "where"),
    [
        (b"nope", ["body"]),
        (stream(pa.table({"pump_id": ["a"], "window": [[1.0]]})), ["pump_class"]),
        (stream(pa.table({"pump_id": ["a"], "pump_class": ["esp"], "window": ["x"]})), ["window"]),
        (stream(EMPTY), ["window"]),
    ],
)
def test_a_body_that_is_no_arrow_batch_names_the_column(data: bytes, where: list[str]) -> None:
    with pytest.raises(InvalidFields) as e:
        batch.decode_arrow(data)
    assert [loc for loc, _ in e.value.problems] == [where]


def test_the_arrow_answer_has_a_row_per_item_with_errors_in_place() -> None:
    model = ServedModel("1", SPEC, lambda x: np.full((len(x), 2), 0.25))
    classes = {"esp": ServedClass({Arm.CHAMPION: model}, weight=0.0)}
    items = batch.decode_arrow(body([[1.0] * 6, [1.0] * 5]))
    answers = batch.Answers(len(items))
    for g in batch.group(items, classes, "salt"):
        scores = batch.score(g)
        answers.fill(g, scores, batch.health_columns(None, scores, len(g.rows)))
    table = pa.ipc.open_stream(batch.encode_arrow(items, answers)).read_all()
    assert tuple(table.column_names) == (*ANSWER_FIELDS, "error")
    assert table.column("pump_id").to_pylist() == ["p0", "p1"]  # kept on a refused row
    assert table.column("pump_class").to_pylist() == ["esp", None]
    assert table.column("error").to_pylist() == [
        None,
        "window: expected 3 x 2 values (motor_temp, flow), got 5",
    ]
    assert table.column("rul_hours").to_pylist() == [25.0, None]
    # No health model: the health columns are null but keep their types.
    assert table.schema.field("health_score").type == pa.float64()
    assert table.schema.field("anomaly").type == pa.bool_()
    assert table.column("anomaly_version").to_pylist() == [None, None]
    # the same answer as JSON gives
    as_json = batch.encode_json(items, answers)
    assert table.to_pylist()[0] == {**as_json["results"][0], "error": None}
    assert as_json["errors"] == [
        {"index": 1, "loc": ["window"], "msg": "expected 3 x 2 values (motor_temp, flow), got 5"}
    ]
