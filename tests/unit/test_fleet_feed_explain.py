"""A drain's explanations (serve_apps/fleet_feed.py): the risky windows of all its jobs
are explained in one scoring call per model, the first ``explain_per_batch`` of them in
the order they came, with the drivers that explaining each window on its own gives."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from pumpfleet import fleet_views as views
from pumpfleet.explain import occlusion, rul_scorer
from pumpfleet.features import FeatureSpec
from pumpfleet.fleet_store import FleetDB, ScoredRow
from serve_apps.fleet_feed import Explanations, FleetFeed, cloud_rows, drivers_of
from serve_apps.model_set import ServedModel

SPEC = FeatureSpec(
    pump_class="esp", channels=["motor_temp", "flow"], window=6, stride=1,
    interval_seconds=3600, rul_cap_hours=100.0, horizon_hours=24.0, mean=[80.0, 1000.0],
    std=[10.0, 100.0],
)  # fmt: skip


class Model:
    """Risk rises with the recent motor temperature and falls with flow; counts calls."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.calls.append(len(x))
        heat = x[:, 3:, 0].mean(axis=1) - 0.3 * x[:, :, 1].mean(axis=1)
        risk = 1 / (1 + np.exp(-heat))
        return np.stack([1 - risk, risk], axis=1).astype(np.float32)


def group(n: int, risk: list[float], first: int, seed: int) -> tuple[dict[str, Any], np.ndarray]:
    """Prediction-log columns of ``n`` pumps (``esp-<first + i>``) and their windows."""
    rng = np.random.default_rng(seed)
    windows = np.stack([rng.normal([80, 1000], [10, 100], (6, 2)) for _ in range(n)])
    windows[:, 3:, 0] += 15  # hot lately
    columns = {
        "pump_id": [f"esp-{first + i}" for i in range(n)],
        "pump_class": ["esp"] * n,
        "timestamp": np.full(n, 3600 * 10**9, dtype="datetime64[ns]"),
        "failure_probability": risk,
        "rul_hours": [10.0] * n,
        "model_version": ["1"] * n,
        "arm": ["champion"] * n,
    }
    return columns, windows


def alone(window: np.ndarray) -> list[dict[str, Any]]:
    """The drivers of one window explained on its own."""
    a = occlusion(rul_scorer(Model(), SPEC), window, SPEC)
    return drivers_of(dict(zip(a.channels, a.risk_by_channel.tolist(), strict=True)))


def test_a_drain_explains_its_first_risky_windows_in_one_call(tmp_path: Path) -> None:
    run = Model()
    model = ServedModel("1", SPEC, run)
    a, wa = group(4, [0.9, 0.1, 0.7, 0.8], 0, seed=1)  # risky: esp-0, esp-2, esp-3
    b, wb = group(3, [0.95, 0.2, 0.6], 10, seed=2)  # risky: esp-10, esp-12
    db = FleetDB(f"sqlite:///{tmp_path / 'fleet.db'}")
    stop = threading.Event()
    feed = FleetFeed(db, stop, max_rows=100, explain_per_batch=4, gather_seconds=2.0)
    with feed._cv:  # both jobs queued before the feed thread takes any: one drain
        assert feed.offer(lambda db, budget: cloud_rows(a, model, wa, budget), 4)
        assert feed.offer(lambda db, budget: cloud_rows(b, model, wb, budget), 3)
    assert feed.drain()
    stop.set()
    variants = 1 + 2 + 3 * 2  # itself, each channel, each of 3 blocks x channel
    assert run.calls == [4 * variants]  # esp-0, esp-2, esp-3, esp-10: one call
    want = {f"esp-{k}": alone(w) for k, w in [(0, wa[0]), (2, wa[2]), (3, wa[3]), (10, wb[0])]}
    assert all(d and d[0]["sensor"] == "motor_temp" for d in want.values())
    pumps = {p["pump_id"]: p["drivers"] for p in views.fleet(db.engine, 4e3, 1e9)["pumps"]}
    assert pumps == want | {"esp-1": [], "esp-11": [], "esp-12": []}  # the budget ran out
    db.close()


def test_a_list_budget_explains_at_once_as_a_drain_does_when_settled() -> None:
    run = Model()
    model = ServedModel("1", SPEC, run)
    columns, windows = group(5, [0.9, 0.1, 0.7, 0.8, 0.99], 0, seed=3)
    budget = [3]
    now = cloud_rows(columns, model, windows, budget)
    assert budget == [0] and run.calls == [3 * 9]
    later = Explanations(3)
    rows = cloud_rows(columns, model, windows, later)
    assert later[0] == 0 and [r.drivers for r in rows] == [None] * 5
    later.settle()
    assert rows == now and len(run.calls) == 2
    assert [r.drivers is not None for r in now] == [True, False, True, True, False]
    assert isinstance(now[0], ScoredRow) and now[0].threshold == SPEC.alert_threshold


def test_a_model_that_fails_to_explain_loses_no_row(tmp_path: Path) -> None:
    """Explaining is worth less than the fleet state: where the model fails on the
    occluded windows, the drain's rows still go in (without drivers), and the failure is
    counted as the feed's error."""

    def broken(x: np.ndarray) -> np.ndarray:
        if len(x) > 1:  # the occlusion variants; scoring one window works
            raise RuntimeError("onnxruntime: out of memory")
        return Model()(x)

    model = ServedModel("1", SPEC, broken)
    a, wa = group(3, [0.9, 0.95, 0.1], 0, seed=3)
    db = FleetDB(f"sqlite:///{tmp_path / 'fleet.db'}")
    stop, errors = threading.Event(), []
    feed = FleetFeed(db, stop, max_rows=100, explain_per_batch=4, on_error=errors.append)
    assert feed.offer(lambda db, budget: cloud_rows(a, model, wa, budget), 3)
    assert feed.drain()
    stop.set()
    pumps = {p["pump_id"]: p for p in views.fleet(db.engine, 4e3, 1e9)["pumps"]}
    assert sorted(pumps) == ["esp-0", "esp-1", "esp-2"]
    assert all(p["drivers"] == [] for p in pumps.values())
    assert errors == ["fleet feed"]
