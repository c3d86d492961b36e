"""benchmarks.skab on two real SKAB files (one per folder), where ../shared/data is present:
the protocol's plumbing, the leave-one-folder-out check and the last line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import SHARED_DATA

SKAB = SHARED_DATA / "skab"


@pytest.mark.realdata
@pytest.mark.skipif(not SKAB.is_dir(), reason=f"SKAB not found at {SKAB}")
def test_skab_benchmark_on_two_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.skab import labelled_files, main

    for folder in ("valve1", "valve2", "anomaly-free"):
        (tmp_path / "data" / folder).mkdir(parents=True)
    shutil.copy(SKAB / "valve1" / "1.csv", tmp_path / "data" / "valve1")
    shutil.copy(SKAB / "valve2" / "1.csv", tmp_path / "data" / "valve2")
    shutil.copy(SKAB / "anomaly-free" / "anomaly-free.csv", tmp_path / "data" / "anomaly-free")
    assert [p.parent.name for p in labelled_files(tmp_path / "data")] == ["valve1", "valve2"]
    assert main(["--data-dir", str(tmp_path / "data"), "--epochs", "5", "--lofo"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert "2 labelled files" in lines[0]
    assert any("flag every test row (trivial)" in line and "100.0" in line for line in lines)
    assert any(line.startswith("| conv_ae on valve2") for line in lines)
    last = dict(kv.split("=") for kv in lines[-1].split())
    assert set(last) == {"f1", "far", "mar"}
    assert 0.0 <= float(last["f1"]) <= 1.0 and 0.0 <= float(last["far"]) <= 100.0
