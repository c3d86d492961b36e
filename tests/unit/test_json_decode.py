"""The msgspec decoder of JSON batches gives pydantic's answers, word for word: the same
items, windows and errors for every body, good or bad; and the answer msgspec writes is
the bytes Starlette's JSONResponse wrote."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.responses import JSONResponse

from serve_apps import batch, json_decode
from serve_apps.errors import InvalidFields
from tests.unit.test_serve_batch import run_batch, served, spec

W = 4


def good(pump: str = "p1", values: list[Any] | None = None) -> dict[str, Any]:
    values = [80.0, 81.5, None, 79] if values is None else values
    return {
        "pump_id": pump,
        "pump_class": "esp",
        "readings": {"motor_temp": values, "flow": values},
    }


def decoded(body: bytes, fast: bool) -> Any:
    """What a decoder makes of ``body``: the items, their windows and every error, or
    the body's own problems."""
    try:
        items = batch.decode_json(body, fast=fast)
    except InvalidFields as e:
        return ("body", e.problems)
    rows = [i for i in range(len(items)) if i not in items.errors and items.pump_class[i] == "esp"]
    ok, windows, errors = items.windows.take(rows, spec(), "esp")
    return items.pump_id, items.pump_class, items.errors, errors, ok, windows.tolist()


def assert_same(body: bytes) -> None:
    fast, slow = decoded(body, True), decoded(body, False)
    # NaN != NaN: compare the windows as text
    assert repr(fast) == repr(slow)


def item_with(raw: str) -> bytes:
    """A batch of a good item and one with ``raw`` (JSON text) as its flow readings."""
    one = json.dumps(good("p1"))
    return f'{{"items": [{one}, {one[:-1]}, "flow": {raw}}}]}}'.encode()


NUMBERS = [
    "[1, 2, 3, 4]",
    "[1e400, 1, 1, 1]",  # overflows a double: no finite number
    "[NaN, 1, 1, 1]",
    "[Infinity, 1, 1, 1]",
    "[-Infinity, 1, 1, 1]",
    '["12.5", 1, 1, 1]',
    "[true, 1, 1, 1]",
    "[123456789012345678901234567890, 1, 1, 1]",
    "[9007199254740993, -0, 1E2, 0.1000000000000000055511151231257827021181583404541015625]",
    "[2.2250738585072011e-308, 5e-324, 1.7976931348623157e308, 1]",
    "[]",
    "[[1], 1, 1, 1]",
    '{"a": 1}',
    "null",
    "[null, null, null, null]",
    "[1, 2]",
    "[01, 1, 1, 1]",
    "[1., 1, 1, 1]",
]


@pytest.mark.parametrize("raw", NUMBERS)
def test_readings_are_refused_and_taken_as_pydantic_does(raw: str) -> None:
    assert_same(item_with(raw))


@pytest.mark.parametrize(
    "change",
    [
        {"pump_id": " p"},
        {"pump_id": "p" * 129},
        {"pump_id": "p\n"},
        {"pump_id": 7},
        {"pump_id": "\ud83d\ude00"},
        {"pump_class": "esp\n"},  # Python's re takes it ($ before a newline); pydantic not
        {"pump_class": ".esp"},
        {"pump_class": "rod"},
        {"pump_class": None},
        {"explain": 1},
        {"explain": True},
        {"extra": 1},
        {"readings": {}},
        {"readings": {"motor_temp": [1, 1, 1, 1]}},
        {"readings": {"motor_temp": [1, 1, 1, 1], "flow": [1, 1, 1, 1], "warp": [1]}},
        {"readings": {"motor_temp": [9999, 1, 1, 1], "flow": [1, 1, 1, 1]}},
        {"readings": {"motor_temp": [None] * 4, "flow": [None, None, None, 1.0]}},
    ],
)
def test_each_bad_item_has_pydantics_error_and_the_rest_are_decoded(change: dict[str, Any]) -> None:
    items = [good("p0"), {**good("p1"), **change}, good("p2")]
    assert_same(json.dumps({"items": items}).encode())


@pytest.mark.parametrize(
    "body",
    [
        b"{nope",
        b'{"items": []}',
        b'{"items": [], "x": 1}',
        b'{"items": [1]}',
        b'{"items": [{"pump_id": "p1"}, 1]}',
        b'{"items": {}}',
        b"[]",
        b'{"items": [{"pump_id": "a\xff", "pump_class": "esp", "readings": {}}]}',
        b'{"items": [{"pump_id": "\\ud800", "pump_class": "esp", "readings": {}}]}',
        b'{"items": [{"pump_id": "p1", "pump_class": "esp", "readings": {"flow": [NaN]}}]}',
        b'{"items": [{"pump_id": "p1", "pump_class": "esp", "readings": {}}]} x',
        b'{"items": [{"pump_id": "p1", "pump_id": "p2", "pump_class": "esp", "readings": {}}]}',
        b'{"items": [{"pump_id": "p1"}], "items": [{"pump_id": "p2", "pump_class": "esp",'
        b' "readings": {"flow": [1], "flow": [2, 3, 4, 5]}}]}',
        b'{"items": ' + b"[" * 300 + b"]" * 300 + b"}",
        json.dumps({"items": [good()] * 10_001}).encode(),
    ],
)
def test_a_body_decodes_as_with_pydantic_alone(body: bytes) -> None:
    assert_same(body)


READING = st.one_of(
    st.none(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(min_value=-50, max_value=300),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.booleans(),
    st.text(max_size=3),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "pump_id": st.one_of(st.text(min_size=0, max_size=5), st.integers()),
                "pump_class": st.sampled_from(["esp", "rod", "es p", "esp\n"]),
                "readings": st.dictionaries(
                    st.sampled_from(["motor_temp", "flow", "warp"]),
                    st.lists(READING, min_size=0, max_size=5),
                ),
            },
            optional={"explain": st.one_of(st.booleans(), st.integers()), "x": st.none()},
        ),
        min_size=1,
        max_size=6,
    )
)
def test_any_batch_decodes_as_with_pydantic_alone(items: list[dict[str, Any]]) -> None:
    assert_same(json.dumps({"items": items}).encode())


def test_a_clean_batch_never_reaches_pydantic(monkeypatch: pytest.MonkeyPatch) -> None:
    def no(*_: Any) -> Any:
        raise AssertionError("pydantic was asked")

    monkeypatch.setattr(json_decode, "decode_pydantic", no)
    monkeypatch.setattr(json_decode, "_by_pydantic", no)
    items = batch.decode_json(json.dumps({"items": [good(f"p{i}") for i in range(50)]}).encode())
    assert items.pump_id == [f"p{i}" for i in range(50)] and items.errors == {}


def test_only_a_bad_item_reaches_pydantic(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[bytes] = []
    by_pydantic = json_decode._by_pydantic

    def counted(raw: bytes) -> Any:
        asked.append(raw)
        return by_pydantic(raw)

    monkeypatch.setattr(json_decode, "_by_pydantic", counted)
    bad = {**good("p3"), "pump_id": True}
    body = json.dumps({"items": [good("p0"), good("p1"), good("p2"), bad]}).encode()
    items = batch.decode_json(body)
    assert len(asked) == 1 and json.loads(asked[0])["pump_id"] is True
    assert items.errors == {3: (["pump_id"], "Input should be a valid string")}
    assert items.pump_id == ["p0", "p1", "p2", None]


def test_windows_built_at_once_are_those_built_one_by_one() -> None:
    s = spec()
    readings: list[dict[str, list[float | None]] | None] = [
        {"motor_temp": [80.0, None, 81.0, 82.0], "flow": [1.0, 2.0, 3.0, 4.0]},
        {"motor_temp": [80.0] * 3, "flow": [1.0] * 4},  # too short
        {"flow": [1.0] * 4, "motor_temp": [70.0, 71.0, 72.0, 73.0]},  # another key order
        {"motor_temp": [80.0] * 4, "flow": [1.0] * 4, "warp": [1.0]},  # unknown
        None,
        {"motor_temp": [9999.0] * 4, "flow": [1.0] * 4},  # outside its physical range
        {"motor_temp": [60.0] * 4, "flow": [5.0, 6.0, 7.0, 8.0]},
    ]
    windows = batch.ReadingsWindows(readings)
    rows = list(range(len(readings)))
    ok, stacked, errors = windows.take(rows, s, "esp")
    each_errors: batch.Problems = {}
    each_ok, each = windows.one_by_one(rows, s, "esp", True, each_errors)
    each_ok, each = batch.checked(each_ok, each, s, "readings", each_errors)
    assert ok == each_ok == [0, 2, 6]
    assert errors == each_errors and sorted(errors) == [1, 3, 4, 5]
    assert stacked.flags.c_contiguous and np.array_equal(stacked, each, equal_nan=True)
    assert stacked[1, :, 0].tolist() == [70.0, 71.0, 72.0, 73.0]  # motor_temp is input 0
    # not strict (the shadow challenger's windows): an unknown reading is no error
    ok, _, errors = windows.take(rows, s, "esp", strict=False)
    assert ok == [0, 2, 3, 6] and sorted(errors) == [1, 4, 5]


def test_the_answer_is_written_as_starlette_wrote_it() -> None:
    raw = [good(f"p{i}", [80.0 + i, 81.5, None, 79]) for i in range(8)]
    raw.append({**good("p9"), "pump_class": "rod"})  # an error in its place
    items = batch.decode_json(json.dumps({"items": raw}).encode())
    answers, _ = run_batch(items, served())
    ours = batch.encode_json_body(items, answers)
    results = [batch.result(items, answers, i) for i in range(len(items))]
    today = {"results": results, "errors": batch.error_list(items)}
    assert ours == JSONResponse(today).body
    assert json.loads(ours)["results"][8] is None and len(json.loads(ours)["errors"]) == 1
