"""The cloud's edge-upload handler (pumpfleet.edge_ingest): names never become paths, a
replayed batch key with other records is a conflict, a retry is a duplicate (issue 16)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from pumpfleet.edge_ingest import handle_upload
from pumpfleet.errors import ConflictError, InputError


def record(i: int, rul: float = 50.0) -> dict[str, Any]:
    return {
        "request_id": f"rig-7:p1:{i}",
        "timestamp": time.time_ns(),
        "pump_id": "p1",
        "pump_class": "esp",
        "model_version": "1",
        "rul_hours": rul,
        "failure_probability": 0.1,
    }


@pytest.mark.parametrize("name", ["..", ".", "...", ".hidden", "a/b", "../../etc", "", "x" * 129])
@pytest.mark.parametrize("field", ["device_id", "batch_key"])
def test_names_that_would_be_paths_are_refused(tmp_path: Path, field: str, name: str) -> None:
    body = {"device_id": "rig-7", "batch_key": "b1", "records": [record(0)], field: name}
    with pytest.raises(InputError, match=rf"^{field}: "):
        handle_upload(tmp_path, body)
    assert not (tmp_path / "edge").exists()  # nothing written anywhere


def test_a_retry_is_a_duplicate_and_a_replay_with_other_records_a_conflict(tmp_path: Path) -> None:
    records = [record(i) for i in range(3)]
    body = {"device_id": "rig-7", "batch_key": "b1", "records": records}
    assert handle_upload(tmp_path, body) == {"stored": 3, "duplicate": False}
    assert handle_upload(tmp_path, body) == {"stored": 0, "duplicate": True}
    changed = {**body, "records": [*records[:2], record(2, rul=1.0)]}
    with pytest.raises(ConflictError, match="batch_key b1 was stored before with other records"):
        handle_upload(tmp_path, changed)
    assert [p.name for p in (tmp_path / "edge" / "rig-7").iterdir()] == ["b1.parquet"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rul_hours": float("inf")}, r"records\.0\.rul_hours"),
        ({"failure_probability": 2.0}, r"records\.0\.failure_probability"),
        ({"timestamp": -(10**30)}, r"records\.0\.timestamp"),
        ({"in_motor_temp": "hot"}, r"records\.0: .*in_motor_temp: a finite number"),
        ({"in_motor_temp": 1e300}, r"records\.0: .*in_motor_temp: a finite number"),
        ({"rul_hours": 1e300}, r"records\.0\.rul_hours: Input should be less than or equal"),
        ({"pump_id": "x" * 200}, r"records\.0\.pump_id"),
        ({"evil": 1}, r"'evil' is not a field of a prediction record"),
    ],
)
def test_records_that_break_the_contract_are_refused(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    body = {"device_id": "rig-7", "batch_key": "b1", "records": [{**record(0), **change}]}
    with pytest.raises(InputError, match=message):
        handle_upload(tmp_path, body)
