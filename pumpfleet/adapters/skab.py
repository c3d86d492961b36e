"""SKAB, the Skoltech water-circulation pump testbed (Katser & Kozitsin, 2020, GPL-3.0),
as a fleet dataset.

Each experiment file becomes one pump of class ``skab`` (``skab-valve1-00``, ...), its
folder the site; readings are one second apart. The per-row ``anomaly`` and
``changepoint`` labels go to ``labels/`` (they are outcomes, not readings). SKAB has no
run-to-failure events, so ``events/`` is empty.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from pumpfleet.adapters._io import write_dataset
from pumpfleet.errors import InputError
from pumpfleet.schema import EVENT_COLUMNS, ChannelSpec, FleetSchema

log = logging.getLogger(__name__)

PUMP_CLASS = "skab"
FOLDERS = ("anomaly-free", "valve1", "valve2")
# Source column → channel, unit, physical range of the testbed's sensors.
CHANNELS: dict[str, tuple[str, str, float, float]] = {
    "Accelerometer1RMS": ("accelerometer1_rms", "g", 0.0, 10.0),
    "Accelerometer2RMS": ("accelerometer2_rms", "g", 0.0, 10.0),
    "Current": ("current", "A", 0.0, 50.0),
    "Pressure": ("pressure", "bar", -10.0, 50.0),
    "Temperature": ("temperature", "degC", -40.0, 200.0),
    "Thermocouple": ("thermocouple", "degC", -40.0, 200.0),
    "Voltage": ("voltage", "V", 0.0, 500.0),
    "Volume Flow RateRMS": ("volume_flow_rate_rms", "l/min", 0.0, 1000.0),
}
LABELS = ("anomaly", "changepoint")


def fleet_schema() -> FleetSchema:
    channels = {name: ChannelSpec(unit=u, min=lo, max=hi) for name, u, lo, hi in CHANNELS.values()}
    return FleetSchema(
        name="skab",
        settings=[],
        channels=channels,
        classes={PUMP_CLASS: list(channels)},
        interval_seconds=1.0,
    )


def read_file(path: Path) -> pd.DataFrame:
    """One SKAB CSV (semicolon-separated), checked for the columns we map."""
    df = pd.read_csv(path, sep=";")
    missing = [c for c in ("datetime", *CHANNELS) if c not in df.columns]
    if missing:
        raise InputError(f"{path}: missing column {missing[0]!r}")
    return df


def _files(data_dir: Path) -> list[tuple[str, Path]]:
    out = []
    for folder in FOLDERS:
        for path in sorted((data_dir / folder).glob("*.csv*"), key=lambda p: (len(p.name), p.name)):
            out.append((folder, path))
    return out


def import_skab(data_dir: Path, out: str, overwrite: bool = False) -> dict[str, int]:
    """Write the SKAB testbed as one fleet dataset at ``out``."""
    if not data_dir.is_dir():
        raise InputError(f"--data-dir {data_dir}: no such folder")
    files = _files(data_dir)
    if not files:
        raise InputError(f"{data_dir}: no SKAB CSV files under {', '.join(FOLDERS)}")
    readings, labels = [], []
    for folder, path in files:
        df = read_file(path)
        number = path.name.split(".")[0]
        pump_id = (
            f"skab-{folder}" if folder == "anomaly-free" else f"skab-{folder}-{int(number):02d}"
        )
        ts = pd.to_datetime(df["datetime"]).dt.tz_localize("UTC")
        frame = pd.DataFrame(
            {"pump_id": pump_id, "pump_class": PUMP_CLASS, "site": folder, "timestamp": ts}
        )
        for source, (name, *_rest) in CHANNELS.items():
            frame[name] = df[source].astype(float).to_numpy()
        readings.append(frame)
        lab = pd.DataFrame({"pump_id": pump_id, "timestamp": ts})
        for col in LABELS:
            lab[col] = df[col].fillna(0).astype("int8") if col in df else pd.Series(0, dtype="int8")
        labels.append(lab)
    all_readings = pd.concat(readings, ignore_index=True)
    all_labels = pd.concat(labels, ignore_index=True)
    write_dataset(
        out,
        fleet_schema(),
        all_readings,
        pd.DataFrame({c: pd.Series(dtype="object") for c in EVENT_COLUMNS}).astype(
            {"timestamp": "datetime64[ms, UTC]"}
        ),
        extra={"labels": all_labels},
        overwrite=overwrite,
    )
    counts = {
        "files": len(files),
        "pumps": int(all_readings["pump_id"].nunique()),
        "rows": len(all_readings),
        "anomalous_rows": int(all_labels["anomaly"].sum()),
    }
    log.info("SKAB written to %s: %s", out, counts)
    return counts
