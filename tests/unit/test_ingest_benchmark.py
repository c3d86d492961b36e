"""``benchmarks.ingest`` without Ray: its reference, vectorised and floor arms, each in an
interpreter of its own on a small fleet with every fault kind, agree, and it ends with
its key=value line."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import ingest


def test_the_arms_agree_and_the_last_line_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PUMPFLEET_HOME", str(tmp_path))
    out = tmp_path / "result.json"
    ingest.main(
        [
            "--rows",
            "6000",
            "--days",
            "12",
            "--arms",
            "reference,vectorised,floor",
            "--out",
            str(out),
        ]
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert any(
        line.startswith("same windows, labels, counts") and ": yes (" in line for line in lines
    )
    for arm in ("reference (pandas", "vectorised, 1 process", "I/O floor"):
        assert any(line.startswith(arm) for line in lines), arm
    pairs = dict(p.split("=") for p in lines[-1].split())
    assert set(pairs) == {"rows_per_core", "ray_vs_single", "peak_gb"}
    assert float(pairs["rows_per_core"]) > 0 and pairs["ray_vs_single"] == "nan"
    assert 0 < float(pairs["peak_gb"]) < 4
    assert out.exists()
