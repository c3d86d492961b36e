"""Writing an adapter's output as a fleet dataset."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from pumpfleet import storage
from pumpfleet.errors import InputError
from pumpfleet.schema import FleetSchema, events_schema, write_fleet_schema

START = pd.Timestamp(datetime(2026, 1, 1, tzinfo=UTC))


def find_file(data_dir: Path, name: str) -> Path:
    """``name`` or ``name.gz`` in ``data_dir``."""
    for candidate in (data_dir / name, data_dir / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise InputError(f"{data_dir}: no {name} (or {name}.gz)")


def write_dataset(
    out: str,
    fleet: FleetSchema,
    readings: pd.DataFrame,
    events: pd.DataFrame,
    extra: dict[str, pd.DataFrame] | None = None,
    overwrite: bool = False,
) -> None:
    """Write a fleet dataset: ``readings/`` by class, ``events/``, ``fleet.json`` and any
    extra tables (``<name>/<name>.parquet``)."""
    import pyarrow as pa
    import pyarrow.dataset as pads
    import pyarrow.parquet as pq

    storage.prepare_dataset(out, overwrite)
    table = pa.Table.from_pandas(readings, schema=fleet.readings_schema(), preserve_index=False)
    fs, path = storage.resolve(storage.join(out, "readings"))
    pads.write_dataset(
        table,
        base_dir=path,
        filesystem=fs,
        format="parquet",
        partitioning=pads.partitioning(pa.schema([("pump_class", pa.string())]), flavor="hive"),
        existing_data_behavior="delete_matching",
        basename_template="part-{i}.parquet",
    )
    tables = {"events": pa.Table.from_pandas(events, schema=events_schema(), preserve_index=False)}
    tables.update(
        {k: pa.Table.from_pandas(v, preserve_index=False) for k, v in (extra or {}).items()}
    )
    for name, t in tables.items():
        tfs, tpath = storage.resolve(storage.join(out, name))
        tfs.create_dir(tpath, recursive=True)
        pq.write_table(t, f"{tpath}/{name}.parquet", filesystem=tfs)
    write_fleet_schema(out, fleet)
