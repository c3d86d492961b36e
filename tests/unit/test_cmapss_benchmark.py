"""benchmarks.cmapss without Ray: the test set's last windows, the validation units cut
like the test set, the scores, and the protocol's choice of window on validation alone."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import pandas as pd
import pytest

from benchmarks import cmapss
from benchmarks.cmapss_scoring import cut_windows, last_windows, score


def test_a_short_unit_is_padded_with_its_first_reading() -> None:
    readings = pd.DataFrame(
        {
            "pump_id": ["b", "b", "a", "a", "a"],
            "timestamp": [2, 1, 1, 2, 3],
            "s": [20.0, 10.0, 1.0, 2.0, 3.0],
        }
    )
    ids, windows = last_windows(readings, ["s"], 3)
    assert ids == ["a", "b"]
    np.testing.assert_array_equal(windows[:, :, 0], [[1.0, 2.0, 3.0], [10.0, 10.0, 20.0]])


def test_validation_units_are_cut_at_every_cycle_from_the_first_cut() -> None:
    values = np.arange(1.0, 6.0)[:, None]  # five cycles
    cuts = cut_windows(values, window=3, first=2)
    assert cuts.shape == (4, 3, 1)  # cut after cycles 2, 3, 4 and 5
    np.testing.assert_array_equal(cuts[0, :, 0], [1.0, 1.0, 2.0])
    np.testing.assert_array_equal(cuts[-1, :, 0], [3.0, 4.0, 5.0])


def test_scores_cap_both_sides_at_125() -> None:
    got = score(np.array([130.0, 10.0]), np.array([200.0, 20.0]))
    assert got["rmse"] == pytest.approx(np.sqrt(100.0 / 2))  # 130 and 200 both count as 125
    assert got["score"] == pytest.approx(np.exp(10 / 13) - 1)  # early by 10: the lenient side


def test_the_option_is_chosen_by_cross_validation_and_every_seed_trains_at_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from benchmarks import cmapss_cv

    calls: list[tuple[int, int, int]] = []
    test = {(30, 0, 0): 11.0, (50, 30, 0): 13.0, (50, 30, 1): 12.0, (50, 30, 2): 14.0}
    chosen: list[list[tuple[int, int]]] = []

    def fake_choose(data_dir: Any, subset: str, options: Any, *rest: Any) -> dict[str, Any]:
        chosen.append(options)
        return {"window": 50, "lookback": 30, "minutes": 1.5, "options": {}}

    def fake_run(
        args: argparse.Namespace, window: int, seed: int, lookback: int = 0
    ) -> dict[str, Any]:
        calls.append((window, lookback, seed))
        return {
            "window": window,
            "seed": seed,
            "val": {"rmse": 12.0},
            "test": {"rmse": test[(window, lookback, seed)], "score": 100.0 + seed},
            "minutes_training": 1.0 + seed,
            "load_average": [2.0, 3.0],
        }

    monkeypatch.setattr(cmapss_cv, "choose", fake_choose)
    monkeypatch.setattr(cmapss, "run", fake_run)
    args = argparse.Namespace(
        subset="fd001",
        seeds=[0, 1, 2],
        options=["50:30", "30", "50"],
        argv=[],
        data_dir=".",
        architecture=None,
        common=True,
    )
    out = cmapss.protocol(args)
    assert chosen == [[(30, 0), (50, 0), (50, 30)]]  # the test set plays no part
    assert calls == [(50, 30, 0), (50, 30, 1), (50, 30, 2), (30, 0, 0)]
    assert (out["window"], out["lookback"], out["option"]) == (50, 30, "50:30")
    assert out["rmse"]["each"] == [13.0, 12.0, 14.0]
    assert out["rmse"]["mean"] == pytest.approx(13.0)
    assert out["rmse"]["std"] == pytest.approx(np.std([13.0, 12.0, 14.0]))
    assert [o["window"] for o in out["others"]] == [30]  # the common window, beside
    assert out["minutes_training"] == {"mean": 2.0, "max": 3.0}
    assert out["minutes_choice"] == 1.5
    assert out["subset"] == "FD001" and out["git_commit"]


def test_one_window_given_is_not_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int, int]] = []

    def fake_run(
        args: argparse.Namespace, window: int, seed: int, lookback: int = 0
    ) -> dict[str, Any]:
        calls.append((window, lookback, seed))
        return {
            "window": window,
            "val": {"rmse": 12.0},
            "test": {"rmse": 12.5, "score": 100.0},
            "minutes_training": 1.0,
            "load_average": [2.0, 3.0],
        }

    monkeypatch.setattr(cmapss, "run", fake_run)
    args = argparse.Namespace(
        subset="fd003", seeds=[0], options=["30:0"], argv=[], architecture=None, common=True
    )
    out = cmapss.protocol(args)
    assert calls == [(30, 0, 0)] and out["choice"] is None and out["others"] == []
