"""The Arrow batch path's parsing and answer, without a server."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from serve_apps.scoring import _arrow_results, _arrow_windows


def test_windows_are_cut_from_one_buffer_with_nulls_kept() -> None:
    col = pa.array([[1.0, 2.0, 3.0], None, [4.0, None, 6.0], [7.0]], type=pa.list_(pa.float64()))
    out = _arrow_windows(col)
    assert out[1] is None
    np.testing.assert_array_equal(out[0], [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(out[2], [4.0, np.nan, 6.0])
    np.testing.assert_array_equal(out[3], [7.0])


def test_fixed_size_and_integer_windows_read_as_floats() -> None:
    col = pa.array([[1, 2], [3, 4]], type=pa.list_(pa.int32(), 2))
    out = _arrow_windows(col)
    assert [w.dtype for w in out] == [np.float64, np.float64]  # type: ignore[union-attr]
    np.testing.assert_array_equal(out[1], [3.0, 4.0])


def test_the_arrow_answer_has_a_row_per_item_with_errors_in_place() -> None:
    ok = {"pump_id": "a", "pump_class": "esp", "arm": "champion", "model_version": "1",
          "rul_hours": 10.0, "failure_probability": 0.1, "alert": False}  # fmt: skip
    body = _arrow_results([ok, None], [{"index": 1, "loc": ["window"], "msg": "bad"}])
    table = pa.ipc.open_stream(body).read_all()
    assert table.column("pump_id").to_pylist() == ["a", None]
    assert table.column("error").to_pylist() == [None, "window: bad"]
    assert table.column("rul_hours").to_pylist() == [10.0, None]
    # No health model: the health columns are null but keep their types.
    assert table.schema.field("health_score").type == pa.float64()
    assert table.schema.field("anomaly").type == pa.bool_()
    assert table.column("anomaly_version").to_pylist() == [None, None]
