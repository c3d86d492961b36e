"""serve_load's report: the tables and the key=value line a script reads, in full and
with --door-only (the front door and FastAPI alone)."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.serve_load_report import report


def arm(rps: float, p99: float, cpu: float | None, replica: float | None = None) -> dict[str, Any]:
    return {"rps": rps, "p50": 5.0, "p99": p99, "errors": 0, "cpu_us": cpu,
            "replica_cpu_us": replica}  # fmt: skip


def rows(door_only: bool) -> dict[str, dict[str, Any]]:
    out = {
        "door@16": arm(800, 30.0, 1500, 1200),
        "fastapi@16": arm(1000, 20.0, 600),
        "door@64": arm(700, 90.0, 1600, 1300),
        "fastapi@64": arm(1400, 60.0, 550),
    }
    if not door_only:
        for n in (16, 64):
            out[f"serve@{n}"] = arm(850, 28.0, 1400, 1150)
            out[f"proxy@{n}"] = arm(150, 200.0, 9000, 5000)
        out["in-process"] = arm(20000, 0.1, None)
        out["in-process"]["batch"] = 150000.0
        out["fastapi@batch"] = {"json": 20000.0}
        out["serve@batch"] = {"json": 21000.0, "arrow": 15000.0}
        out["serve@chaos"] = {**arm(900, 50.0, None), "events": ["x"], "error_kinds": {}}
    return out


def test_door_only_reports_the_door_and_fastapi(capsys: pytest.CaptureFixture[str]) -> None:
    report(rows(door_only=True), [16, 64], door_only=True)
    out = capsys.readouterr().out
    assert "serve, front door (HAProxy)" in out and "Python proxy" not in out
    assert out.splitlines()[-1] == (
        "serve_p99_ms=30.0 ratio=0.80 ratio64=0.50 cpu_us=1500 replica_cpu_us=1200 "
        "fastapi_cpu_us=600"
    )


def test_the_full_report_keeps_its_last_line(capsys: pytest.CaptureFixture[str]) -> None:
    report(rows(door_only=False), [16, 64])
    out = capsys.readouterr().out
    assert "Python proxy" in out and "Arrow IPC" in out
    assert out.splitlines()[-1] == (
        "serve_p99_ms=30.0 ratio=0.80 ratio64=0.50 arrow_wps=15000 chaos_errors=0 "
        "cpu_us=1500 fastapi_cpu_us=600"
    )
