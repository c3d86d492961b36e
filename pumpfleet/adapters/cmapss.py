"""NASA C-MAPSS turbofan run-to-failure data (Saxena et al., PHM08) as fleet datasets.

Units become pumps of class ``cmapss_fd00N``, cycles become readings one interval apart,
the three operating settings become settings and the 21 sensors become channels
``s1``..``s21``. Each training unit fails at its last cycle. Each test unit is cut off
before failure: its failure is recorded at last cycle + its true RUL (from RUL_FD00N), so
that every test window gets its true label, and ``truth/`` lists the RUL per unit.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from pumpfleet.adapters._io import START, find_file, write_dataset
from pumpfleet.errors import InputError
from pumpfleet.schema import ChannelSpec, EventType, FleetSchema

log = logging.getLogger(__name__)

SUBSETS = ("FD001", "FD002", "FD003", "FD004")
SETTINGS = ("setting1", "setting2", "setting3")
SENSORS = tuple(f"s{i}" for i in range(1, 22))
COLUMNS = ("unit", "cycle", *SETTINGS, *SENSORS)
CYCLE = pd.Timedelta(hours=1)


def fleet_schema(subset: str) -> FleetSchema:
    # Every C-MAPSS sensor is positive and below 10,000 (the largest, Nc, is ~9,200):
    # a value outside (0, 100,000) is a corrupted file, not an engine.
    return FleetSchema(
        name=f"cmapss-{subset.lower()}",
        settings=list(SETTINGS),
        channels={s: ChannelSpec(unit="-", min=0.0, max=1e5) for s in SENSORS},
        classes={pump_class(subset): list(SENSORS)},
        interval_seconds=CYCLE.total_seconds(),
    )


def pump_class(subset: str) -> str:
    return f"cmapss_{subset.lower()}"


def read_table(path: Path) -> pd.DataFrame:
    """A C-MAPSS text file (whitespace-separated, trailing spaces, maybe gzipped)."""
    df = pd.read_csv(path, sep=r"\s+", header=None)
    if df.shape[1] != len(COLUMNS):
        raise InputError(
            f"{path.name}: expected {len(COLUMNS)} columns "
            f"(unit, cycle, 3 settings, 21 sensors), got {df.shape[1]}"
        )
    df.columns = list(COLUMNS)
    return df


def _readings(df: pd.DataFrame, subset: str, part: str) -> pd.DataFrame:
    out = pd.DataFrame(
        {
            "pump_id": [f"{subset.lower()}-{part}-{u:03d}" for u in df["unit"]],
            "pump_class": pump_class(subset),
            "site": f"cmapss-{part}",
            "timestamp": START + pd.to_timedelta(df["cycle"].to_numpy() - 1, unit="h"),
        }
    )
    for c in (*SETTINGS, *SENSORS):
        out[c] = df[c].astype(float).to_numpy()
    return out


def _events(last: pd.DataFrame, subset: str, part: str, detail: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "pump_id": [f"{subset.lower()}-{part}-{u:03d}" for u in last["unit"]],
            "pump_class": pump_class(subset),
            "site": f"cmapss-{part}",
            "timestamp": START + pd.to_timedelta(last["failure_cycle"].to_numpy() - 1, unit="h"),
            "event_type": str(EventType.FAILURE),
            "detail": detail,
        }
    )


def import_cmapss(subset: str, data_dir: Path, out: str, overwrite: bool = False) -> dict[str, int]:
    """Write ``out/train`` and ``out/test`` fleet datasets for one C-MAPSS subset."""
    subset = subset.upper()
    if subset not in SUBSETS:
        raise InputError(f"--subset must be one of {', '.join(SUBSETS)}, got {subset!r}")
    if not data_dir.is_dir():
        raise InputError(f"--data-dir {data_dir}: no such folder")
    train = read_table(find_file(data_dir, f"train_{subset}.txt"))
    test = read_table(find_file(data_dir, f"test_{subset}.txt"))
    rul = pd.read_csv(find_file(data_dir, f"RUL_{subset}.txt"), sep=r"\s+", header=None)
    test_units = np.sort(test["unit"].unique())
    if rul.shape[1] != 1 or len(rul) != len(test_units):
        raise InputError(
            f"RUL_{subset}: expected one value per test unit ({len(test_units)}), "
            f"got {len(rul)} rows x {rul.shape[1]} columns"
        )
    fleet = fleet_schema(subset)

    train_last = train.groupby("unit")["cycle"].max().reset_index()
    train_last["failure_cycle"] = train_last["cycle"]
    write_dataset(
        f"{out}/train",
        fleet,
        _readings(train, subset, "train"),
        _events(train_last, subset, "train", "end_of_life"),
        overwrite=overwrite,
    )

    test_last = test.groupby("unit")["cycle"].max().reset_index().sort_values("unit")
    test_last["rul"] = rul[0].to_numpy()
    test_last["failure_cycle"] = test_last["cycle"] + test_last["rul"]
    truth = pd.DataFrame(
        {
            "pump_id": [f"{subset.lower()}-test-{u:03d}" for u in test_last["unit"]],
            "last_cycle": test_last["cycle"].to_numpy(),
            "true_rul_cycles": test_last["rul"].to_numpy(),
        }
    )
    write_dataset(
        f"{out}/test",
        fleet,
        _readings(test, subset, "test"),
        _events(test_last, subset, "test", "true_rul"),
        extra={"truth": truth},
        overwrite=overwrite,
    )
    counts = {
        "train_rows": len(train),
        "train_units": int(train["unit"].nunique()),
        "test_rows": len(test),
        "test_units": len(test_units),
    }
    log.info("C-MAPSS %s written to %s: %s", subset, out, counts)
    return counts
