"""Explanations on the device (issue 21): each alert carries the sensors and time blocks
driving it, computed by the cloud's occlusion code through the one scoring path, equal to
the cloud's for the same window; in the stored record and the upload; within a time
budget per batch."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_agent.agent import Agent
from edge_agent.explaining import Explainer
from edge_agent.predict import Batch
from pumpfleet.explain import occlusion, rul_scorer
from pumpfleet.records import PredictionRecord, rows_to_table
from pumpfleet.registry import model_name
from tests.unit.edge_support import (
    CLS,
    Cloud,
    EdgeWorkspace,
    agent_config,
    shared_workspace,
    write_readings,
)


@pytest.fixture
def ws(tmp_path_factory: pytest.TempPathFactory) -> EdgeWorkspace:
    return shared_workspace(tmp_path_factory.getbasetemp())


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[Cloud]:
    c = Cloud(tmp_path / "cloud")
    yield c
    c.close()


def test_alerts_on_the_device_carry_the_drivers_the_cloud_finds_for_the_same_window(
    ws: EdgeWorkspace, cloud: Cloud, tmp_path: Path
) -> None:
    cfg = agent_config(ws, tmp_path / "agent", cloud.url, alert_threshold=0.2)
    agent = Agent(cfg)
    windows: dict[str, np.ndarray] = {}
    agent.listeners.append(lambda batch: windows.update(batch.raw))
    write_readings(cfg.spool, "r000", ["hot"], 0, 24, failing=True)
    agent.run(threading.Event(), exit_when_idle=True)
    rows = cloud.rows().to_pylist()
    explained = {r["request_id"]: json.loads(r["explanation"]) for r in rows if r["explanation"]}
    c = agent.store.counters()
    # One alert raised (the first hot window) and explained; the pump's later alerts in
    # the same minute go without (every 60 s), counted.
    assert c["alerts"] >= 1 and c["explained"] == len(explained) == 1
    assert c["alerts_unexplained"] == c["alerts"] - 1
    first_alert = min((r for r in rows if r["alert"]), key=lambda r: r["timestamp"])
    assert list(explained) == [first_alert["request_id"]]
    # The cloud: the registry's model (the device runs its v1 bundle) in onnxruntime,
    # the scoring API's own explain path, on the same raw window.
    served = ws.registry.load_version(model_name(CLS), "1")
    cloud_says = occlusion(
        rul_scorer(served.runner(), served.spec), windows[first_alert["request_id"]], served.spec
    ).as_dict()
    device_says = explained[first_alert["request_id"]]
    assert device_says["top"] == cloud_says["top"] and device_says["top"]
    for channel, risk in cloud_says["risk_by_channel"].items():
        assert device_says["risk_by_channel"][channel] == pytest.approx(risk, abs=1e-6)
    for channel, hours in cloud_says["rul_hours_by_channel"].items():
        assert device_says["rul_hours_by_channel"][channel] == pytest.approx(hours, abs=1e-3)
    # Its top time blocks are the cloud's largest per-block attributions.
    blocks = [(c_, i, v) for c_, vs in cloud_says["risk_by_time"].items() for i, v in enumerate(vs)]
    best = sorted((b for b in blocks if b[2] > 0), key=lambda b: -b[2])[:3]
    step = cloud_says["time_block_steps"]
    assert [(b["channel"], b["start"], b["risk"]) for b in device_says["top_blocks"]] == [
        (c_, i * step, pytest.approx(v, abs=1e-6)) for c_, i, v in best
    ]
    assert 0 < device_says["ms"] < 1000


def _record(pump: str, ts: int, alert: bool) -> dict[str, Any]:
    return {"key": f"{pump}:{ts}", "alert": alert, "anomaly": False, "row": {"pump_id": pump}}


class FakeScorer:
    """A model that scores by the mean of the first channel: enough for occlusion."""

    def __init__(self) -> None:
        from tests.unit.edge_support import SPEC

        self.spec = SPEC

        def run(x: np.ndarray) -> np.ndarray:
            out = np.zeros((len(x), 2), dtype=np.float32)
            out[:, 0] = np.clip(x[:, :, 0].mean(axis=1) / 10 + 0.5, 0, 1)
            out[:, 1] = np.clip(x[:, :, 0].mean(axis=1) / 10, -10, 10)
            return out

        self.run = run


def _batch(records: list[dict[str, Any]]) -> Batch:
    from tests.unit.edge_support import raw_windows

    raw, _ = raw_windows(len(records), 3)
    scorer: Any = FakeScorer()
    return Batch(
        records=records,
        raw={r["key"]: raw[i] for i, r in enumerate(records) if r["alert"]},
        scorers={r["key"]: scorer for r in records if r["alert"]},
    )


def test_the_explainer_keeps_to_its_interval_and_its_budget() -> None:
    now = [0.0]
    e = Explainer(budget_ms=1000, every_seconds=60, clock=lambda: now[0])
    batch = _batch([_record("p1", 1, True), _record("p1", 2, True), _record("p2", 1, False)])
    assert e.explain(batch) == {"explained": 1, "alerts_unexplained": 1}
    assert batch.records[0]["row"]["explanation"]["top"] is not None  # the raised one
    assert "explanation" not in batch.records[1]["row"]
    now[0] = 30.0  # still alarmed, explained 30 s ago: not again
    assert e.explain(_batch([_record("p1", 3, True)])) == {
        "explained": 0,
        "alerts_unexplained": 1,
    }
    now[0] = 61.0  # a minute on: its latest alert is explained again
    again = _batch([_record("p1", 4, True), _record("p1", 5, True)])
    assert e.explain(again) == {"explained": 1, "alerts_unexplained": 1}
    assert "explanation" in again.records[1]["row"]
    # Cleared and raised again: explained at once, interval or not.
    e.explain(_batch([_record("p1", 6, False)]))
    raised = _batch([_record("p1", 7, True)])
    assert e.explain(raised)["explained"] == 1
    # No budget: nothing explained, every alert counted as without.
    none = Explainer(budget_ms=0, every_seconds=0)
    assert none.explain(_batch([_record("p3", 1, True), _record("p4", 1, True)])) == {
        "explained": 0,
        "alerts_unexplained": 2,
    }


def test_an_explanation_is_part_of_the_record_contract_and_the_log() -> None:
    row = {
        "request_id": "rig-7:p1:1",
        "timestamp": 1,
        "pump_id": "p1",
        "pump_class": "esp",
        "model_version": "1",
        "rul_hours": 5.0,
        "failure_probability": 0.9,
        "explanation": {
            "top": ["motor_temp"],
            "risk_by_channel": {"motor_temp": 0.4},
            "rul_hours_by_channel": {"motor_temp": -20.0},
            "top_blocks": [{"channel": "motor_temp", "start": 9, "end": 12, "risk": 0.3}],
            "block_steps": 3,
            "ms": 1.5,
        },
    }
    record = PredictionRecord.model_validate(row)
    assert record.explanation is not None and record.explanation.top_blocks[0].end == 12
    with pytest.raises(ValueError, match=r"explanation\.ms"):
        PredictionRecord.model_validate(row | {"explanation": {**row["explanation"], "ms": -1}})
    table = rows_to_table([record.model_dump(), {**record.model_dump(), "explanation": None}])
    texts = table.column("explanation").to_pylist()
    assert json.loads(texts[0]) == row["explanation"] and texts[1] is None
    # A log without explanations has no such column, as before.
    assert "explanation" not in rows_to_table([{**row, "explanation": None}]).column_names
