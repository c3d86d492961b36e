"""The real-data adapters, on the real files where ../shared/data is present."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pandas as pd
import pytest
from pydantic import ValidationError

from pumpfleet.adapters.cmapss import import_cmapss
from pumpfleet.adapters.skab import import_skab
from pumpfleet.errors import InputError
from pumpfleet.schema import ChannelSpec, FleetSchema, read_fleet_schema
from pumpfleet.validation import REASON, validate_pump
from tests.conftest import SHARED_DATA

realdata = pytest.mark.skipif(
    not SHARED_DATA.is_dir(), reason=f"public data not found at {SHARED_DATA}"
)


@pytest.mark.realdata
@realdata
@pytest.mark.parametrize(
    "subset, train_rows, test_rows", [("FD001", 20631, 13096), ("FD003", 24720, 16596)]
)
def test_cmapss_subsets_load(tmp_path: Path, subset: str, train_rows: int, test_rows: int) -> None:
    counts = import_cmapss(subset, SHARED_DATA / "cmapss", str(tmp_path))
    assert counts == {
        "train_rows": train_rows,
        "train_units": 100,
        "test_rows": test_rows,
        "test_units": 100,
    }
    train = pd.read_parquet(tmp_path / "train" / "readings")
    assert len(train) == train_rows and train["pump_id"].nunique() == 100
    assert set(train["pump_class"].astype(str)) == {f"cmapss_{subset.lower()}"}
    events = pd.read_parquet(tmp_path / "train" / "events")
    # Every training unit fails at its last cycle.
    last = train.groupby("pump_id")["timestamp"].max()
    assert (events.set_index("pump_id")["timestamp"].sort_index() == last.sort_index()).all()
    truth = pd.read_parquet(tmp_path / "test" / "truth")
    assert len(truth) == 100 and truth["true_rul_cycles"].min() > 0
    # The test failure lies true-RUL cycles after the last reading.
    test = pd.read_parquet(tmp_path / "test" / "readings")
    fail = pd.read_parquet(tmp_path / "test" / "events").set_index("pump_id")["timestamp"]
    gap = (fail - test.groupby("pump_id")["timestamp"].max()).dt.total_seconds() / 3600
    assert (
        gap.sort_index().to_numpy()
        == truth.set_index("pump_id")["true_rul_cycles"].sort_index().to_numpy()
    ).all()
    fleet = read_fleet_schema(str(tmp_path / "train"))
    assert fleet.channel_names == tuple(f"s{i}" for i in range(1, 22))
    assert fleet.settings == ["setting1", "setting2", "setting3"]


@pytest.mark.realdata
@realdata
def test_skab_loads_with_labels(tmp_path: Path) -> None:
    counts = import_skab(SHARED_DATA / "skab", str(tmp_path))
    assert counts["files"] == counts["pumps"] == 21  # anomaly-free + 16 valve1 + 4 valve2
    readings = pd.read_parquet(tmp_path / "readings")
    labels = pd.read_parquet(tmp_path / "labels")
    assert len(readings) == len(labels) == counts["rows"]
    free = readings[readings["pump_id"] == "skab-anomaly-free"]
    assert len(free) == 9405
    assert labels[labels["pump_id"] == "skab-anomaly-free"]["anomaly"].sum() == 0
    assert 0.2 < counts["anomalous_rows"] / counts["rows"] < 0.5
    # Every reading passes validation against the dataset's own schema.
    fleet = read_fleet_schema(str(tmp_path))
    checked = validate_pump(free, fleet)
    assert checked[REASON].isna().all()


def _cmapss_copy(tmp_path: Path, subset: str = "FD001") -> Path:
    src = SHARED_DATA / "cmapss"
    dst = tmp_path / "in"
    dst.mkdir()
    for name in (f"train_{subset}.txt.gz", f"test_{subset}.txt.gz", f"RUL_{subset}.txt.gz"):
        shutil.copy(src / name, dst / name)
    return dst


@pytest.mark.realdata
@realdata
def test_cmapss_wrong_column_count_is_refused(tmp_path: Path) -> None:
    data = _cmapss_copy(tmp_path)
    with gzip.open(data / "train_FD001.txt.gz", "rt") as f:
        rows = f.read().splitlines()
    # Plain text beside the .gz is read first: drop the last column of every line.
    (data / "train_FD001.txt").write_text("\n".join(" ".join(r.split()[:-1]) for r in rows))
    with pytest.raises(InputError, match=r"train_FD001\.txt: expected 26 columns .* got 25"):
        import_cmapss("FD001", data, str(tmp_path / "out"))


@pytest.mark.realdata
@realdata
def test_cmapss_rul_count_must_match(tmp_path: Path) -> None:
    data = _cmapss_copy(tmp_path)
    (data / "RUL_FD001.txt").write_text("10\n20\n")
    with pytest.raises(
        InputError, match=r"RUL_FD001: expected one value per test unit \(100\), got 2"
    ):
        import_cmapss("FD001", data, str(tmp_path / "out"))


def test_missing_files_and_folders_are_clear(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"no train_FD002\.txt"):
        import_cmapss("FD002", tmp_path, str(tmp_path / "out"))
    with pytest.raises(InputError, match=r"--subset must be one of"):
        import_cmapss("FD007", tmp_path, str(tmp_path / "out"))
    with pytest.raises(InputError, match="no such folder"):
        import_skab(tmp_path / "nope", str(tmp_path / "out"))
    (tmp_path / "valve1").mkdir()
    (tmp_path / "valve1" / "0.csv").write_text("datetime;Current\n2020-01-01 00:00:00;1.0\n")
    with pytest.raises(InputError, match="missing column 'Accelerometer1RMS'"):
        import_skab(tmp_path, str(tmp_path / "out"))


def test_fleet_schema_rules() -> None:
    chan = {"a": ChannelSpec(unit="-", min=0, max=1)}
    with pytest.raises(ValidationError, match=r"class x lists unknown channels \['b'\]"):
        FleetSchema(channels=chan, classes={"x": ["a", "b"]})
    with pytest.raises(ValidationError, match="clash"):
        FleetSchema(channels={"site": ChannelSpec(unit="-", min=0, max=1)}, classes={"x": ["site"]})
    with pytest.raises(ValidationError, match="min must be below max"):
        ChannelSpec(unit="-", min=1, max=1)


def test_validation_follows_the_dataset_schema() -> None:
    fleet = FleetSchema(
        settings=[],
        channels={"a": ChannelSpec(unit="-", min=0, max=10)},
        classes={"turbine": ["a"]},
    )
    df = pd.DataFrame(
        {
            "pump_id": "t-1",
            "pump_class": ["turbine", "turbine", "esp"],
            "site": "s",
            "timestamp": pd.date_range("2026-01-01", periods=3, freq="h", tz="UTC"),
            "a": [5.0, 11.0, 5.0],
        }
    )
    reasons = validate_pump(df, fleet)[REASON].tolist()
    assert reasons == [None, "out_of_range:a", "unknown_class"]


@pytest.mark.realdata
@realdata
def test_overwrite_leaves_nothing_of_the_old_dataset(tmp_path: Path) -> None:
    from pumpfleet.simulator import SimulationConfig, simulate

    simulate(SimulationConfig(pumps=4, days=2), str(tmp_path))
    with pytest.raises(InputError, match="--overwrite"):
        import_skab(SHARED_DATA / "skab", str(tmp_path))
    import_skab(SHARED_DATA / "skab", str(tmp_path), overwrite=True)
    classes = {p.name for p in (tmp_path / "readings").iterdir()}
    assert classes == {"pump_class=skab"}
    assert not (tmp_path / "faults").exists()
    assert read_fleet_schema(str(tmp_path)).name == "skab"
