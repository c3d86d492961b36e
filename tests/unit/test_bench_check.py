"""benchmarks.bench_check's decisions without running a benchmark: reading the figures of
a last line, the tolerance verdict, and the committed references being well formed."""

from __future__ import annotations

import pytest

from benchmarks.bench_check import Check, last_line_figures, load, verdict


def check(value: float = 12.0, tolerance: float = 0.1) -> Check:
    return Check(
        name="c", module="benchmarks.cmapss", args=[], key="rmse", value=value, tolerance=tolerance
    )


def test_the_last_line_gives_the_figures() -> None:
    out = "table\nrmse=12.89 score=245.2 minutes=0.97 window=50 note=x\n\n"
    assert last_line_figures(out) == {
        "rmse": 12.89,
        "score": 245.2,
        "minutes": 0.97,
        "window": 50.0,
    }
    assert last_line_figures("") == {}


@pytest.mark.parametrize(
    ("got", "ok"), [(12.0, True), (12.1, True), (11.9, True), (12.11, False), (11.8, False)]
)
def test_a_figure_may_move_by_its_tolerance_either_way(got: float, ok: bool) -> None:
    assert verdict(check(), got)[0] is ok


def test_a_run_without_the_figure_fails() -> None:
    ok, line = verdict(check(), None)
    assert not ok and "printed no rmse=" in line


def test_the_committed_references_name_their_commit_and_tolerance() -> None:
    checks = load()
    assert {c.module for c in checks} == {
        "benchmarks.cmapss",
        "benchmarks.skab",
        "benchmarks.fleet_feed",
    }
    for c in checks:
        assert c.value > 0 and 0 < c.tolerance < 0.05 * c.value + 0.2
        assert c.commit and len(c.commit) == 40, c.name
