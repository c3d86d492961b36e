"""The monitor's whole run without Ray: a small hand-written snapshot as the reference, a
prediction log whose motor temperature drifts halfway, the classes analysed in this
process → the drifted class alerts, one retrain goes to the (fake) job server, and the
JSON summary, HTML report, drift map and per-chunk signals are written."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pumpfleet.alerts import AlertPolicy
from pumpfleet.drift import AnalysisConfig
from pumpfleet.features import FeatureSpec
from pumpfleet.monitoring import report, run
from pumpfleet.predlog import PredictionLog
from pumpfleet.registry import Registry
from pumpfleet.settings import Settings

NOW = datetime(2026, 3, 1, tzinfo=UTC)
CHANNELS = ["motor_temp", "flow"]
MEAN, STD = [80.0, 1000.0], [5.0, 50.0]
SPEC = FeatureSpec(
    pump_class="esp",
    channels=CHANNELS,
    window=3,
    stride=1,
    interval_seconds=3600,
    rul_cap_hours=100,
    horizon_hours=20,
    mean=MEAN,
    std=STD,
)


def write_snapshot(features: Path, per_split: int = 500) -> None:
    """Windows of normal operation for every split, hourly, as ingest writes them."""
    rng = np.random.default_rng(0)
    rows, windows = [], []
    for s, split in enumerate(("train", "val", "holdout", "future")):
        for i in range(per_split):
            rows.append(
                {
                    "pump_id": f"esp-{s}",
                    "site": "s1",
                    "split": split,
                    "end_time": 1_700_000_000_000 + (s * per_split + i) * 3_600_000,
                    "rul_hours": 100.0,
                    "failure_within_horizon": 0,
                }
            )
            windows.append(rng.normal(MEAN, STD, (SPEC.window, len(CHANNELS))).reshape(-1))
    table = pa.Table.from_pylist(rows).cast(
        pa.schema(
            [
                ("pump_id", pa.string()),
                ("site", pa.string()),
                ("split", pa.string()),
                ("end_time", pa.timestamp("ms", tz="UTC")),
                ("rul_hours", pa.float32()),
                ("failure_within_horizon", pa.int8()),
            ]
        )
    )
    flat = pa.array(np.concatenate(windows).astype(np.float32))
    table = table.append_column(
        "window", pa.FixedSizeListArray.from_arrays(flat, SPEC.window * len(CHANNELS))
    )
    part = features / "snap1" / "windows" / "pump_class=esp"
    part.mkdir(parents=True)
    pq.write_table(table, part / "part-0.parquet")
    manifest = {"specs": {"esp": SPEC.model_dump(mode="json")}, "channels": CHANNELS}
    (features / "snap1" / "manifest.json").write_text(json.dumps(manifest))
    (features / "LATEST").write_text("snap1")


def write_log(settings: Settings, n: int = 600) -> None:
    """Served predictions of one class, their inputs the means of windows like the
    reference's; the motor runs 4 sd hotter from the middle on."""
    rng = np.random.default_rng(1)
    sd = np.asarray(STD) / np.sqrt(SPEC.window)  # of a window's mean
    temp = rng.normal(MEAN[0], sd[0], n)
    temp[n // 2 :] += 4 * STD[0]
    frame = pd.DataFrame(
        {
            "pump_id": [f"esp-{i % 5}" for i in range(n)],
            "pump_class": "esp",
            "timestamp": pd.date_range("2026-02-01", periods=n, freq="min", tz="UTC"),
            "rul_hours": 90.0,
            "failure_probability": 0.1,
            "in_motor_temp": temp,
            "in_flow": rng.normal(MEAN[1], sd[1], n),
        }
    )
    log = PredictionLog(str(settings.predictions_dir), to_table=pa.Table.from_pylist)
    log.extend(frame.to_dict("records"))
    log.flush()


class FakeServer:
    address = "fake"

    def __init__(self) -> None:
        self.submitted: list[tuple[list[str], str]] = []

    def running_classes(self) -> set[str]:
        return set()

    def submit(self, classes: list[str], reason: str) -> str:
        self.submitted.append((classes, reason))
        return f"pumpfleet-retrain-{len(self.submitted)}"


@pytest.fixture
def monitored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    settings = Settings(home=tmp_path / "ws")
    write_snapshot(settings.features_dir)
    write_log(settings)
    return settings


def test_a_drifting_class_alerts_and_one_retrain_is_submitted(
    monitored: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The report must use the figure drawn where the class was analysed, not redraw it.
    monkeypatch.setattr(report, "class_png", lambda r: pytest.fail("figure drawn again"))
    server = FakeServer()
    policy = AlertPolicy(consecutive=2, clear_after=2)
    out = run.run_monitor(monitored, chunk_size=100, policy=policy, server=server, now=NOW)
    assert out["status"] == "ok" and out["snapshot_id"] == "snap1"
    esp = out["classes"]["esp"]
    assert esp["champion"] is None and esp["reference_snapshot"] == "snap1"
    assert esp["chunks"] == 6 and esp["drifted"] and esp["alert_active"]
    assert esp["drifted_features"] == ["motor_temp"] and esp["drifted_chunks"] == 3
    # The motor runs hot from row 300 (chunk 3); two drifted chunks in a row raise it.
    assert esp["episodes"] == [{"began": 3, "raised": 4, "cleared": None}]
    assert esp["detected_at_chunk"] == 4
    assert out["alerting_classes"] == ["esp"] and out["drifted_classes"] == ["esp"]
    assert esp["notes"] == [
        "esp: no champion; drift only, against snapshot snap1",
        "esp: no reference predictions with labels; performance not estimated",
    ]
    assert server.submitted == [(["esp"], "drift on esp: motor_temp")]
    assert out["triggers"] == [
        {
            "pump_class": "esp",
            "start": True,
            "reason": "drift on esp: motor_temp",
            "job_id": "pumpfleet-retrain-1",
        }
    ]
    reports = monitored.reports_dir
    latest = json.loads((reports / "drift-latest.json").read_text())
    assert latest["alerting_classes"] == ["esp"] and latest["triggers"] == out["triggers"]
    html = Path(out["report"]).read_text()
    assert "pumpfleet drift report" in html and "retrain submitted" in html
    # the class's figure, drawn where it was analysed, is in the page and not the summary
    assert html.count("<img alt='esp' src='data:image/png;base64,") == 1
    assert run.FIGURE not in esp and run.FIGURE not in latest["classes"]["esp"]
    assert Path(out["drift_map"]).read_bytes().startswith(b"\x89PNG")
    (chunks,) = reports.glob("drift-*-chunks.parquet")
    assert set(pd.read_parquet(chunks)["pump_class"]) == {"esp"}
    # The MLflow run holds the class's alert and chunk counts (no performance: no labels).
    logged = Registry(monitored.tracking_uri).client.get_run(out["mlflow_run_id"]).data
    assert logged.metrics == {"esp.alert": 1.0, "esp.drifted_chunks": 3.0, "esp.chunks": 6.0}


def test_the_classes_are_analysed_by_whatever_runs_them(monitored: Settings) -> None:
    """The Ray job passes its own runner (one task per class); this one records calls."""
    calls: list[tuple[str, list[str], int]] = []

    def analyse(
        settings: Settings,
        snapshot: str,
        inputs: Mapping[str, run.ClassInput],
        cfg: AnalysisConfig,
    ) -> dict[str, Any]:
        calls.append((snapshot, sorted(inputs), cfg.chunk_size))
        return {c: "skipped by the test" for c in inputs}

    out = run.run_monitor(monitored, chunk_size=100, trigger=False, now=NOW, analyse=analyse)
    assert calls == [("snap1", ["esp"], 100)]
    assert out["skipped"] == {"esp": "skipped by the test"} and out["classes"] == {}
    assert out["report"] is None  # nothing analysed: the JSON summary only
