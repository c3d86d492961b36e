"""The monitor degrades cleanly: an empty log, a log from an older version, a class with
no reference, an unreachable job server: one clear message each, no crash, no retrain."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pumpfleet.alerts import AlertPolicy
from pumpfleet.predlog import PredictionLog
from pumpfleet.settings import Settings
from pumpfleet.triggers import load_state, retrain_classes, start_retrains
from ray_jobs.monitor import run_monitor
from ray_jobs.triggers import JobServer
from tests.conftest import free_port

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def fake_snapshot(settings: Settings, classes: list[str]) -> None:
    root = settings.features_dir
    (root / "snap1").mkdir(parents=True)
    manifest = {"specs": {c: {} for c in classes}, "summary": {"rows_in": 0}}
    (root / "snap1" / "manifest.json").write_text(json.dumps(manifest))
    (root / "LATEST").write_text("snap1")


def write_log(settings: Settings, rows: list[dict[str, Any]]) -> None:
    """Rows as they are, outside the record contract: logs of older versions, or broken."""
    import pyarrow as pa

    log = PredictionLog(str(settings.predictions_dir), to_table=pa.Table.from_pylist)
    log.extend(rows)
    log.flush()


def test_empty_log_is_one_message(settings: Settings) -> None:
    out = run_monitor(settings)
    assert out["status"] == "empty"
    assert out["message"] == (
        f"no predictions logged under {settings.predictions_dir}; nothing to monitor"
    )
    assert out["report"] is None and out["triggers"] == []
    # The summary is written as it is returned, less the paths of reports not made.
    written = json.loads((settings.reports_dir / "drift-latest.json").read_text())
    assert written == {k: v for k, v in out.items() if k not in ("report", "drift_map")}


def test_old_schema_log_is_left_out_with_a_note(settings: Settings) -> None:
    fake_snapshot(settings, ["esp"])
    ts = pd.Timestamp("2026-02-01", tz="UTC")
    # an older version logged outputs only: no input summaries (in_* columns)
    write_log(settings, [
        {"pump_id": f"esp-{i}", "pump_class": "esp", "timestamp": ts, "rul_hours": 10.0}
        for i in range(80)
    ])  # fmt: skip
    out = run_monitor(settings, chunk_size=50)
    assert out["status"] == "ok" and out["classes"] == {}
    assert out["notes"] == [
        "80 logged predictions carry no input summaries (in_* columns; an older version's"
        " log): left out of the analysis"
    ]
    assert out["triggers"] == []


def test_log_without_class_column(settings: Settings) -> None:
    fake_snapshot(settings, ["esp"])
    write_log(settings, [{"pump_id": "p", "rul_hours": 1.0, "in_flow": 2.0}] * 60)
    out = run_monitor(settings)
    assert out["notes"] == [
        "the prediction log has no pump_class, timestamp column: written by an older"
        " version; nothing analysed"
    ]


def test_class_without_reference_is_skipped(settings: Settings) -> None:
    fake_snapshot(settings, ["esp"])
    ts = pd.Timestamp("2026-02-01", tz="UTC")
    write_log(settings, [
        {"pump_id": "sub-1", "pump_class": "submarine", "timestamp": ts, "in_flow": 1.0},
        *[{"pump_id": "esp-1", "pump_class": "esp", "timestamp": ts, "in_flow": 1.0}] * 10,
    ])  # fmt: skip
    out = run_monitor(settings, chunk_size=50)
    assert out["skipped"] == {
        "submarine": "no reference data for this class",
        "esp": "10 predictions, fewer than a chunk (50)",
    }


class FakeServer:
    address = "fake"

    def __init__(self, running: set[str] | Exception = frozenset()) -> None:
        self.running = running
        self.submitted: list[list[str]] = []

    def running_classes(self) -> set[str]:
        if isinstance(self.running, Exception):
            raise self.running
        return set(self.running)

    def submit(self, classes: list[str], reason: str) -> str:
        self.submitted.append(classes)
        return f"pumpfleet-retrain-{len(self.submitted)}"


def test_one_job_per_class_and_cooldown_survive_restarts(settings: Settings) -> None:
    wanted = {"esp": "drift on esp: motor_temp", "rod": "drift on rod: flow"}
    p = AlertPolicy(cooldown_hours=24)
    busy = FakeServer(running={"rod"})
    out = start_retrains(settings, wanted, p, NOW, busy)
    assert busy.submitted == [["esp"]]
    assert out["triggers"] == [
        {
            "pump_class": "esp",
            "start": True,
            "reason": "drift on esp: motor_temp",
            "job_id": "pumpfleet-retrain-1",
        },
        {
            "pump_class": "rod",
            "start": False,
            "reason": "drift on rod: flow; a retrain job is already running",
            "job_id": None,
        },
    ]
    state = load_state(settings)  # durable: in the workspace
    assert (state.last_retrain, state.last_job) == ({"esp": NOW}, {"esp": "pumpfleet-retrain-1"})
    again = FakeServer()
    start_retrains(settings, wanted, p, NOW, again)
    assert again.submitted == [["rod"]]  # esp cools down; rod no longer runs


def test_a_job_for_every_class_blocks_all(settings: Settings) -> None:
    server = FakeServer(running={"*"})
    start_retrains(settings, {"esp": "drift"}, AlertPolicy(), NOW, server)
    assert server.submitted == []


def test_unreachable_job_server_is_one_message_and_no_retrain(settings: Settings) -> None:
    address = f"http://127.0.0.1:{free_port()}"
    server = JobServer(address)
    out = start_retrains(settings, {"esp": "drift", "rod": "drift"}, AlertPolicy(), NOW, server)
    assert out["message"].startswith(f"job server at {address} unreachable")
    assert [(t["pump_class"], t["start"]) for t in out["triggers"]] == [
        ("esp", False),
        ("rod", False),
    ]
    assert load_state(settings).last_retrain == {}
    down = FakeServer(running=ConnectionError("Failed to connect"))
    assert (
        "unreachable (Failed to connect)"
        in start_retrains(settings, {"esp": "drift"}, AlertPolicy(), NOW, down)["message"]
    )


def test_no_job_server_configured() -> None:
    out = start_retrains(Settings(), {"esp": "drift"}, AlertPolicy(), NOW, None)
    assert out == {
        "triggers": [
            {
                "pump_class": "esp",
                "start": False,
                "reason": "drift; no job server (--jobs-address) to submit to",
            }
        ],
        "message": None,
    }


@pytest.mark.parametrize(
    ("entrypoint", "meta", "classes"),
    [
        ("python -m ray_jobs.retrain --reason x --classes esp rod", None, {"esp", "rod"}),
        ("python -m ray_jobs.retrain --classes esp --epochs 3", None, {"esp"}),
        ("python -m ray_jobs.retrain --reason scheduled", None, {"*"}),
        ("whatever", {"classes": "pcp"}, {"pcp"}),
        ("whatever", {"classes": ""}, {"*"}),
    ],
)
def test_retrain_classes(entrypoint: str, meta: dict[str, str] | None, classes: set[str]) -> None:
    assert retrain_classes(entrypoint, meta) == classes


def test_job_server_lists_running_retrains() -> None:
    class Job:
        def __init__(self, sid: str, status: str, entrypoint: str) -> None:
            self.submission_id, self.status, self.entrypoint = sid, status, entrypoint
            self.metadata: dict[str, str] = {}

    class Client:
        def list_jobs(self) -> list[Job]:
            return [
                Job("pumpfleet-retrain-1", "RUNNING", "python -m ray_jobs.retrain --classes esp"),
                Job("pumpfleet-retrain-2", "SUCCEEDED", "python -m ray_jobs.retrain --classes rod"),
                Job("raysubmit_x", "RUNNING", "python -m ray_jobs.retrain --classes pcp"),
            ]

    server = JobServer("http://nowhere")
    server._client = Client()
    assert server.running_classes() == {"esp"}


def test_schedule_runs_what_is_due_and_survives_a_failure(settings: Settings) -> None:
    from datetime import timedelta

    from pumpfleet.errors import DataError
    from pumpfleet.scheduling import due_tasks, run_schedule

    assert due_tasks({"retrain": None}, {"retrain": 24, "monitor": 1}, NOW) == [
        "monitor",
        "retrain",
    ]
    ticks = iter(NOW + timedelta(hours=h) for h in (0, 1, 2, 25))
    calls: list[str] = []

    def monitor() -> None:
        calls.append("monitor")
        raise DataError("no predictions")  # logged; the loop goes on

    ran = run_schedule(
        settings,
        {"retrain": 24, "monitor": 2},
        {"retrain": lambda: calls.append("retrain"), "monitor": monitor},
        iterations=4,
        clock=lambda: next(ticks),
        sleep=lambda s: None,
    )
    assert calls == ["monitor", "retrain", "monitor", "monitor", "retrain"]
    assert [r["ok"] for r in ran] == [False, True, False, False, True]
    # a restarted scheduler remembers: nothing is due an hour after the last runs
    again = run_schedule(
        settings,
        {"retrain": 24, "monitor": 2},
        {"retrain": lambda: calls.append("x"), "monitor": lambda: calls.append("x")},
        iterations=1,
        clock=lambda: NOW + timedelta(hours=26),
        sleep=lambda s: None,
    )
    assert again == []


def test_new_data_starts_a_retrain_once(settings: Settings) -> None:
    fake_snapshot(settings, ["esp"])  # ingested from 0 rows
    part = settings.data_dir / "readings" / "pump_class=esp"
    part.mkdir(parents=True)
    pd.DataFrame({"x": range(1500)}).to_parquet(part / "part-0.parquet")
    ts = pd.Timestamp("2026-02-01", tz="UTC")
    write_log(settings, [{"pump_id": "esp-1", "pump_class": "esp", "timestamp": ts,
                          "in_flow": 1.0}] * 10)  # fmt: skip
    server = FakeServer()
    p = AlertPolicy(new_data_rows=1000)
    out = run_monitor(settings, policy=p, server=server, now=NOW)
    assert server.submitted == [["esp"]]
    assert out["triggers"][0]["reason"] == "new data: 1500 rows since snapshot snap1"
    run_monitor(settings, policy=p, server=server, now=NOW)  # cooling down
    assert server.submitted == [["esp"]]
    quiet = FakeServer()
    run_monitor(settings, policy=AlertPolicy(new_data_rows=2000), server=quiet, now=NOW)
    assert quiet.submitted == []


DRIVERS = {
    "flagged": 40, "windows": 400, "explained": 40, "top": ["motor_temp"],
    "risk_by_channel": {"motor_temp": 0.21, "flow": -0.01},
    "rul_hours_by_channel": {"motor_temp": -30.0, "flow": 1.0},
    "top_counts": {"motor_temp": 38, "flow": 2}, "basis": "reference windows",
}  # fmt: skip


def test_what_drives_the_alerts_reaches_the_summary_and_the_report() -> None:
    from pumpfleet.drift import AnalysisConfig, analyse_class, shuffled_reference
    from pumpfleet.monitoring.reference import Reference, analysis_frame
    from pumpfleet.monitoring.report import report_html
    from pumpfleet.monitoring.summary import class_meta, class_summary

    rng, n = np.random.default_rng(0), 2000
    ts = pd.date_range("2025-01-01", periods=n, freq="h", tz="UTC")
    temp, flow = rng.normal(80, 5, n), rng.normal(1000, 50, n)
    drift = shuffled_reference(pd.DataFrame({"motor_temp": temp, "flow": flow, "timestamp": ts}))
    ref = Reference(drift, None, ["motor_temp", "flow"], "snap1", "1", drivers=DRIVERS)
    rows = pd.DataFrame(
        {
            "pump_id": "esp-1",
            "pump_class": "esp",
            "timestamp": pd.date_range("2026-03-01", periods=300, freq="min", tz="UTC"),
            "in_motor_temp": rng.normal(80, 5, 300),
            "in_flow": rng.normal(1000, 50, 300),
        }
    )
    analysis = analysis_frame(rows, pd.DataFrame(), ref)
    cfg = AnalysisConfig(chunk_size=100, multivariate=False)
    r = analyse_class("esp", ref.drift, analysis, ref.features, cfg)
    s = class_summary(r, AlertPolicy(), class_meta("esp", ref, rows, analysis))
    assert s["alert_drivers"]["top"] == ["motor_temp"] and s["champion"] == "1"
    summary = {
        "created": "now", "snapshot_id": "snap1", "predictions": 300, "chunk_size": 100,
        "policy": AlertPolicy().model_dump(), "classes": {"esp": s}, "skipped": {},
        "notes": [], "triggers": [],
    }  # fmt: skip
    html = report_html(summary, {}, None)
    assert "What drives each class's alerts" in html
    assert "<td>40 of 40 flagged (400 windows)</td>" in html
    assert "motor_temp +0.210 (largest in 38), flow -0.010 (largest in 2)" in html


def served_rows(n: int, hot_from: int | None, versions: tuple[str, ...] = ("3",)) -> pd.DataFrame:
    """A class's logged rows: inputs, the champion's outputs and, unless ``versions`` is
    empty (an older log), the anomaly model's columns; alarms all the time from
    ``hot_from`` on."""
    rng = np.random.default_rng(1)
    rows = pd.DataFrame(
        {
            "pump_id": [f"esp-{i % 7}" for i in range(n)],
            "pump_class": "esp",
            "timestamp": pd.date_range("2026-03-01", periods=n, freq="min", tz="UTC"),
            "model_version": "1",
            "rul_hours": 100.0,
            "failure_probability": 0.1,
            "in_motor_temp": rng.normal(80, 5, n),
            "in_flow": rng.normal(1000, 50, n),
        }
    )
    if versions:
        score = rng.gamma(2.0, 0.2, n) - 0.3
        if hot_from is not None:
            score[hot_from:] += 1.0
        rows["health_score"] = score
        rows["anomaly"] = score > 1
        rows["anomaly_version"] = [versions[i % len(versions)] for i in range(n)]
    return rows


def reference(health: bool) -> Any:
    from pumpfleet.drift import HealthReference, shuffled_reference
    from pumpfleet.monitoring.reference import Reference

    rng, n = np.random.default_rng(0), 2000  # 20 reference chunks: thresholds that hold
    ts = pd.date_range("2025-01-01", periods=n, freq="h", tz="UTC")
    temp, flow = rng.normal(80, 5, n), rng.normal(1000, 50, n)
    drift = shuffled_reference(pd.DataFrame({"motor_temp": temp, "flow": flow, "timestamp": ts}))
    scores = pd.DataFrame({"health_score": rng.gamma(2.0, 0.2, n) - 0.3, "timestamp": ts})
    href = HealthReference("3", shuffled_reference(scores), 0.01, 0.012) if health else None
    return Reference(
        drift, None, ["motor_temp", "flow"], "snap1", "1", drivers=DRIVERS, health=href
    )


def test_health_reaches_the_summary_and_the_report() -> None:
    from pumpfleet.drift import AnalysisConfig, analyse_class
    from pumpfleet.monitoring.reference import analysis_frame
    from pumpfleet.monitoring.report import report_html
    from pumpfleet.monitoring.summary import class_meta, class_summary

    ref = reference(health=True)
    rows = served_rows(600, hot_from=300, versions=("3", "3", "2"))  # a third from v2
    analysis = analysis_frame(rows, pd.DataFrame(), ref)
    assert analysis["health_score"].notna().sum() == 400
    assert analysis.loc[rows["anomaly_version"] == "2", "anomaly"].isna().all()
    cfg = AnalysisConfig(chunk_size=100, multivariate=False)
    r = analyse_class("esp", ref.drift, analysis, ref.features, cfg, None, ref.health)
    meta = class_meta("esp", ref, rows, analysis)
    assert "esp: 200 health scores from anomaly versions other than the champion" in ref.notes[0]
    s = class_summary(r, AlertPolicy(), meta)
    h = s["health"]
    assert (h["anomaly_champion"], h["scored_rows"], h["expected_alarm_rate"]) == ("3", 400, 0.012)
    assert h["alert_active"] and h["detected_at_chunk"] == 4 and h["alarm_rate_chunks"] == 3
    assert not s["drifted"]  # the inputs did not move
    summary = {
        "created": "now", "snapshot_id": "snap1", "predictions": 600, "chunk_size": 100,
        "policy": AlertPolicy().model_dump(), "classes": {"esp": s}, "skipped": {},
        "notes": [], "triggers": [],
    }  # fmt: skip
    html = report_html(summary, {"esp": r}, None)
    assert "Health (anomaly models)" in html and "<td>ALERT</td><td>400</td>" in html


def test_a_log_without_health_columns_is_monitored_as_before() -> None:
    from pumpfleet.drift import AnalysisConfig, analyse_class
    from pumpfleet.monitoring.reference import analysis_frame
    from pumpfleet.monitoring.summary import class_meta, class_summary

    cfg = AnalysisConfig(chunk_size=100, multivariate=False)
    for health in (False, True):  # no anomaly model; one, but the log predates its columns
        ref = reference(health)
        rows = served_rows(300, None, versions=())
        analysis = analysis_frame(rows, pd.DataFrame(), ref)
        assert "health_score" not in analysis and "anomaly" not in analysis
        r = analyse_class("esp", ref.drift, analysis, ref.features, cfg, None, ref.health)
        plain = analyse_class("esp", ref.drift, analysis, ref.features, cfg)
        pd.testing.assert_frame_equal(r.chunks, plain.chunks)
        s = class_summary(r, AlertPolicy(), class_meta("esp", ref, rows, analysis))
        assert r.health_flags() == [] and not s["drifted"]
        if health:
            assert s["health"]["scored_rows"] == 0 and not s["health"]["alert_active"]
            assert any("no health scores from anomaly model v3" in n for n in r.notes)
        else:
            assert s["health"] is None and ref.notes == []
    # rows that carry health scores while the class has no anomaly champion: a note
    ref = reference(health=False)
    rows = served_rows(300, None)
    analysis = analysis_frame(rows, pd.DataFrame(), ref)
    assert analysis["health_score"].isna().all()
    assert class_meta("esp", ref, rows, analysis)["health"] is None
    assert "no anomaly champion to compare with" in ref.notes[0]


def test_the_monitor_rayjob_submits_retrains_to_its_own_cluster() -> None:
    import argparse
    import shlex
    from urllib.parse import urlsplit

    from cluster import validate as v
    from pumpfleet.job_options import add_monitor_args

    (job,) = [d for w, d in v.manifests() if w.startswith("k8s/jobs/rayjob-monitor.yaml#")]
    argv = shlex.split(job["spec"]["entrypoint"])  # one command (the validator checks that)
    assert argv[:3] == ["python", "-m", "ray_jobs.monitor"] and not v.entry_point_problems(argv)
    parser = argparse.ArgumentParser()
    add_monitor_args(parser)
    args = parser.parse_args(argv[3:])
    assert args.jobs_address and not args.no_trigger
    (cluster,) = [d for _, d in v.manifests() if d["kind"] == "RayCluster"]
    name, namespace = cluster["metadata"]["name"], cluster["metadata"]["namespace"]
    assert job["spec"]["clusterSelector"]["ray.io/cluster"] == name
    url = urlsplit(args.jobs_address)  # KubeRay's head service, at the dashboard's port
    assert (url.scheme, url.hostname) == ("http", f"{name}-head-svc.{namespace}.svc")
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert {"name": "dashboard", "containerPort": url.port} in head["ports"]


def test_a_monitor_without_a_job_server_says_so_once(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PUMPFLEET_JOBS_ADDRESS", raising=False)
    fake_snapshot(settings, ["esp"])
    part = settings.data_dir / "readings" / "pump_class=esp"
    part.mkdir(parents=True)
    pd.DataFrame({"x": range(1500)}).to_parquet(part / "part-0.parquet")
    ts = pd.Timestamp("2026-02-01", tz="UTC")
    write_log(settings, [{"pump_id": "esp-1", "pump_class": "esp", "timestamp": ts,
                          "in_flow": 1.0}] * 10)  # fmt: skip
    out = run_monitor(settings, policy=AlertPolicy(new_data_rows=1000), now=NOW)
    assert not out["triggers"][0]["start"]
    assert out["notes"] == [
        "retraining wanted for esp but not submitted: no Ray job server "
        "(--jobs-address or PUMPFLEET_JOBS_ADDRESS)"
    ]
    assert load_state(settings).last_retrain == {}


def test_the_daily_fleet_mode_is_an_option_of_the_monitor_command(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import argparse

    from pumpfleet.job_options import add_monitor_args
    from pumpfleet.monitoring import run as core
    from ray_jobs import monitor

    seen: list[dict[str, object]] = []
    monkeypatch.setattr(core, "run_monitor", lambda *a, **kw: seen.append(kw) or {})
    parser = argparse.ArgumentParser()
    add_monitor_args(parser)
    for argv, daily in ((["--no-trigger"], False), (["--no-trigger", "--daily-fleet"], True)):
        monitor.monitor_from_args(settings, parser.parse_args(argv))
        assert seen[-1]["daily_fleet"] is daily and seen[-1]["trigger"] is False
