"""An Arrow batch's windows, gathered from one flat buffer: the usual batch (every row's
window of the model's size) as rows of one matrix, any other row by row; the same
windows either way."""

from __future__ import annotations

import numpy as np

from serve_apps.windows import FlatWindows
from tests.unit.test_json_decode import W, spec


def test_the_usual_batch_and_a_ragged_one_give_the_same_windows() -> None:
    s = spec()
    size = W * len(s.inputs)
    rng = np.random.default_rng(0)
    values = rng.normal(80, 5, (5, size))
    usual = FlatWindows(values.ravel(), np.full(5, size))
    # the same rows with a short one (row 2) and a null one (row 4, no values) among them
    short = rng.normal(80, 5, 3)
    flat = np.concatenate([values[0], values[1], short, values[3]])
    ragged = FlatWindows(flat, np.array([size, size, 3, size, 0]))
    ok, windows, errors = usual.take([0, 1, 3], s, "esp")
    ok2, windows2, errors2 = ragged.take([0, 1, 2, 3, 4], s, "esp")
    assert ok == ok2 == [0, 1, 3] and errors == {}
    assert sorted(errors2) == [2, 4]
    assert errors2[2] == (["window"], f"expected {W} x 2 values (motor_temp, flow), got 3")
    assert np.array_equal(windows, windows2)
    assert np.array_equal(windows[2], values[3].reshape(W, 2))  # time-major, inputs inner
