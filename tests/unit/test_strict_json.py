"""What the project prints and writes is strict JSON (null, never NaN), and Ray's token
file is its owner's alone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pumpfleet import jsontext, storage
from pumpfleet.entry import run_main


def test_non_finite_numbers_become_null_everywhere_in_a_summary() -> None:
    summary = {
        "rmse": float("nan"),
        "bound": float("inf"),
        "per_class": {"esp": [np.float64("nan"), np.float32(1.5), -np.inf]},
        "array": np.array([1.0, np.nan]),
        "count": np.int64(3),
        "path": Path("/x"),
        "ok": True,
    }
    text = jsontext.dumps(summary)
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {
        "rmse": None,
        "bound": None,
        "per_class": {"esp": [None, 1.5, None]},
        "array": [1.0, None],
        "count": 3,
        "path": "/x",
        "ok": True,
    }


def test_entry_points_and_written_reports_are_strict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_main(lambda: {"f1": float("nan")}) == 0
    assert json.loads(capsys.readouterr().out, parse_constant=pytest.fail) == {"f1": None}
    storage.write_json(tmp_path / "drift-latest.json", {"delay": float("nan")})
    text = (tmp_path / "drift-latest.json").read_text()
    assert json.loads(text, parse_constant=pytest.fail) == {"delay": None}


def test_rays_token_file_is_made_private(tmp_path: Path) -> None:
    from ray_jobs._ray import protect_token

    token = tmp_path / "auth_token"
    token.write_text("secret")
    token.chmod(0o644)
    assert protect_token(token) is True
    assert token.stat().st_mode & 0o777 == 0o600
    assert protect_token(token) is False  # already private: nothing to do
    assert protect_token(tmp_path / "missing") is False
