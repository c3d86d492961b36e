"""The closed loop on the shared local Ray: logged predictions whose motor temperature
drifts partway → the monitor alerts on that class only, with estimated and realised
performance → one retrain submitted, then a cooldown, and an unreachable job server is one
message → new data with the drift → retrain → A/B on post-drift data → the gates."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pumpfleet import onnx_io, runtime
from pumpfleet.features import decode_outputs, window_features, window_summary
from pumpfleet.predlog import PredictionLog
from pumpfleet.records import feedback_table
from pumpfleet.registry import CHAMPION, Registry, anomaly_model_name, model_name
from pumpfleet.settings import Settings
from pumpfleet.snapshot import open_snapshot
from tests.conftest import free_port

pytestmark = [pytest.mark.ray, pytest.mark.slow]

PER_PHASE = 150  # predictions per class before the drift, and as many after


@pytest.fixture(scope="module")
def loop_ws(workspace: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A copy of the trained workspace (registry and snapshots), so that this module's
    retrain and promotion leave the shared one as it was."""
    src: Settings = workspace["settings"]
    home = tmp_path_factory.mktemp("loop")
    shutil.copy(src.home / "mlflow.db", home / "mlflow.db")
    shutil.copytree(src.features_dir, home / "features")
    return Settings(home=home)


HealthColumns = Callable[[np.ndarray], dict[str, np.ndarray]]


def _register_health_model(s: Settings, cls: str) -> tuple[str, HealthColumns]:
    """An anomaly champion for ``cls`` (a conv-AE fitted briefly on normal training
    windows, calibrated on normal validation ones: ray_jobs.train_anomaly's steps without
    the Tune search), and what Serve logs with it for raw windows."""
    from pumpfleet.anomaly import AnomalyConfig, fit_autoencoder, window_errors
    from pumpfleet.anomaly_training import class_data
    from pumpfleet.health import calibrate

    snap = open_snapshot(str(s.features_dir))
    d, spec = class_data(snap, cls), snap.spec(cls)
    model, _ = fit_autoencoder(d["train_normal"], None, AnomalyConfig(epochs=2))
    health = calibrate(window_errors(model, d["val_normal"]), "conv_ae", 0.05)
    registry = Registry(s.tracking_uri, s.artifact_root)
    run_id = registry.start_run("pumpfleet-test", f"anomaly-{cls}")
    config = {"kind": "anomaly", "model_kind": "conv_ae", "health": health.model_dump()}
    onnx = onnx_io.to_onnx(model, spec.window, spec.n_channels)
    uri = registry.log_model(run_id, onnx, spec, model.state_dict(), config)
    registry.end_run(run_id)
    version = registry.register(uri, anomaly_model_name(cls), {"feature_snapshot": snap.id})
    registry.set_alias(anomaly_model_name(cls), CHAMPION, version)
    session = runtime.session(onnx)

    def columns(raw: np.ndarray) -> dict[str, np.ndarray]:
        errors = runtime.run(session, window_features(raw, spec))
        return {"health_score": health.score(errors), "anomaly": health.flag(errors)}

    return version, columns


def _log_predictions(
    s: Settings, cls: str, other: str, health_version: str, health_columns: HealthColumns
) -> None:
    """What Serve would have logged, and the feedback that followed for half of it; only
    ``cls`` has an anomaly model (``other``'s health columns are null)."""
    snap = open_snapshot(str(s.features_dir))
    registry = Registry(s.tracking_uri, s.artifact_root)
    rows, feedback = [], []
    t0 = pd.Timestamp("2026-06-01", tz="UTC")
    rng = np.random.default_rng(0)
    for c in (cls, other):
        model = registry.load(model_name(c), CHAMPION)
        parts = [snap.load(c, split, model.spec) for split in ("train", "val", "holdout")]
        raw = np.concatenate([p[0] for p in parts])
        cols = {k: np.concatenate([p[1][k] for p in parts]) for k in parts[0][1]}
        idx = rng.choice(len(raw), 2 * PER_PHASE, replace=False)
        raw, pumps, truth = raw[idx].copy(), cols["pump_id"][idx], cols["rul_hours"][idx]
        if c == cls:  # the second half reads 15 % high
            raw[PER_PHASE:, :, model.spec.channels.index("motor_temp")] *= 1.15
        rul, prob = decode_outputs(
            runtime.run(runtime.session(model.onnx), window_features(raw, model.spec)),
            model.spec,
        )
        summary = window_summary(raw, model.spec)
        health = health_columns(raw) if c == cls else None
        for j in range(len(raw)):
            ts = t0 + pd.Timedelta(minutes=j)
            rows.append(
                {
                    "timestamp": ts,
                    "pump_id": str(pumps[j]),
                    "pump_class": c,
                    "arm": "champion",
                    "model_version": model.version,
                    "rul_hours": float(rul[j]),
                    "failure_probability": float(prob[j]),
                    **{f"in_{k}": float(v[j]) for k, v in summary.items()},
                    "health_score": float(health["health_score"][j]) if health else None,
                    "anomaly": bool(health["anomaly"][j]) if health else None,
                    "anomaly_version": health_version if health else None,
                }
            )
            if j % 2:
                feedback.append(
                    {"pump_id": str(pumps[j]), "observed_at": ts, "rul_hours": float(truth[j])}
                )
    log = PredictionLog(str(s.predictions_dir))
    log.extend(rows)
    log.flush()
    fb = PredictionLog(f"{s.predictions_dir}-feedback", to_table=feedback_table)
    fb.extend(feedback)
    fb.flush()


def test_closed_loop(loop_ws: Settings, workspace: dict[str, Any]) -> None:
    from pumpfleet_cli.demo_loop import InProcessJobs, closed_loop
    from ray_jobs.monitor import run_monitor

    s = loop_ws
    served = sorted(c for c, r in workspace["evaluate"]["classes"].items() if r["champion"])
    assert len(served) >= 2
    cls, other = served[0], served[1]
    version, health_columns = _register_health_model(s, cls)
    _log_predictions(s, cls, other, version, health_columns)

    jobs = InProcessJobs()
    mon = run_monitor(s, chunk_size=50, server=jobs)
    assert mon["alerting_classes"] == [cls]
    c = mon["classes"][cls]
    assert "motor_temp" in c["drifted_features"]
    assert c["chunks"] == 6 and c["detected_at_chunk"] in (3, 4)  # drift begins at chunk 3
    assert {"mae", "roc_auc"} <= set(c["estimated"]) and "mae" in c["realised"]
    assert not mon["classes"][other]["drifted"]
    assert jobs.submitted == [([cls], f"drift on {cls}: {', '.join(c['drifted_features'])}")]
    assert Path(mon["report"]).exists() and Path(mon["drift_map"]).exists()
    html = Path(mon["report"]).read_text()
    assert "pumpfleet drift report" in html and "fleet drift map" in html
    # the sensors behind the champion's flags, from its ONNX on its reference windows
    d, channels = c["alert_drivers"], open_snapshot(str(s.features_dir)).spec(cls).channels
    assert d["explained"] == min(200, d["flagged"]) > 0 and set(d["risk_by_channel"]) == set(
        channels
    )
    assert "What drives each class" in html and "Health (anomaly models)" in html
    # the anomaly model sees the drift too; reported, not retrained on (one job above)
    h = c["health"]
    assert (h["anomaly_champion"], h["scored_rows"], h["chunks"]) == (version, 2 * PER_PHASE, 6)
    assert h["expected_alarm_rate"] >= h["target_far"] == 0.05
    assert mon["health_alerting_classes"] == [cls] and h["detected_at_chunk"] in (3, 4)
    assert mon["classes"][other]["health"] is None  # its rows' health columns are null

    again = run_monitor(s, chunk_size=50, server=InProcessJobs())  # within the cooldown
    assert "cooling down" in again["triggers"][0]["reason"]
    down = run_monitor(s, chunk_size=50, address=f"http://127.0.0.1:{free_port()}")
    assert any("unreachable" in n for n in down["notes"])
    assert not any(t["start"] for t in down["triggers"])

    # The health model leaves again: the loop below retrains the RUL model only (a class
    # with a health model would also get a new one, a Tune search this test can spare).
    Registry(s.tracking_uri, s.artifact_root).client.delete_registered_model(
        anomaly_model_name(cls)
    )
    demo = SimpleNamespace(pumps=24, days=50, seed=5, epochs=8, health_epochs=2)
    loop = closed_loop(s, demo, cls, jobs.submitted[0][1], "motor_temp", 1.15)
    ab = loop["ab"]
    assert ab["windows"] > 100 and ab["champion"] != ab["challenger"]
    assert loop["challenger"] != loop["champion_before"]
    assert loop["champion_after"] in (loop["champion_before"], loop["challenger"])
    assert loop["promoted"] == (loop["champion_after"] == loop["challenger"])
