"""serve_load's batch table: windows/s against FastAPI's JSON, and the CPU a batch cost
every server process and Serve's replicas ("-" where it was not measured)."""

from __future__ import annotations

import pytest

from benchmarks.serve_load_report import batch_table


def test_the_batch_table_shows_each_arms_cpu(capsys: pytest.CaptureFixture[str]) -> None:
    batch_table(
        {
            "fastapi@batch": {"json": 10000.0, "json_cpu_ms": 60.0},
            "serve@batch": {
                "json": 15000.0,
                "json_cpu_ms": 120.5,
                "json_replica_cpu_ms": 100.3,
                "arrow": 45000.0,
                "arrow_cpu_ms": 27.5,
                "arrow_replica_cpu_ms": None,
            },
            "in-process": {"batch": 150000.0},
        }
    )
    lines = {line.split("  ")[0]: line.split() for line in capsys.readouterr().out.splitlines()}
    assert "replicas CPU ms/batch" in " ".join(lines["batch of 1,000"])
    assert lines["fastapi, JSON"][-2:] == ["1.00x", "60.0"]
    assert lines["serve, JSON (front door)"][-4:] == ["15,000", "1.50x", "120.5", "100.3"]
    assert lines["serve, Arrow IPC (front door)"][-4:] == ["45,000", "4.50x", "27.5", "-"]
    assert lines["onnxruntime in-process"][-2:] == ["150,000", "15.00x"]


def test_cpu_not_measured_is_a_dash(capsys: pytest.CaptureFixture[str]) -> None:
    batch_table(
        {
            "fastapi@batch": {"json": 20000.0},
            "serve@batch": {"json": 21000.0, "arrow": 15000.0},
            "in-process": {"batch": 150000.0},
        }
    )
    out = capsys.readouterr().out
    arrow = next(line for line in out.splitlines() if line.startswith("serve, Arrow"))
    assert arrow.split()[-3:] == ["0.75x", "-", "-"]
