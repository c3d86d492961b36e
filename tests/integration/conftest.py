"""A small fleet with every kind of bad row injected, ingested and trained once per
session on the shared local Ray."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pumpfleet.registry import CHALLENGER, CHAMPION, Registry, model_name
from pumpfleet.schema import PUMP_CLASSES
from pumpfleet.settings import Settings
from pumpfleet.simulator import SimulationConfig, simulate
from pumpfleet.windows import WindowConfig

# reason → rows injected into the ESP partition
INJECTED = {
    "out_of_range:motor_temp": 3,
    "duplicate_timestamp": 2,
    "missing:site": 1,
    "no_readings": 2,
    "unknown_class": 0,  # a class can only come from the partition path here
}


def inject_faults(dataset: Path) -> int:
    part = dataset / "readings" / "pump_class=esp"
    clean = pq.read_table(next(part.glob("*.parquet"))).to_pandas()
    pump = clean[clean.pump_id == clean.pump_id.iloc[0]]
    rows = []
    hot = pump.iloc[100:103].copy()
    hot["motor_temp"] = 900.0
    # Replace, not add: the hot rows take their timestamps out of the clean file.
    rows.append(hot)
    rows.append(pump.iloc[200:202].copy())  # exact repeats of clean rows
    nosite = pump.iloc[[300]].copy()
    nosite["site"] = None
    rows.append(nosite)
    empty = pump.iloc[400:402].copy()
    empty[
        [
            "intake_pressure",
            "discharge_pressure",
            "motor_temp",
            "vibration",
            "motor_current",
            "flow",
        ]
    ] = np.nan
    rows.append(empty)
    bad = pd.concat(rows, ignore_index=True)
    # Drop the originals of the replaced rows so that each bad row is the only one at
    # its timestamp (else it would be counted as a duplicate, not as its own fault).
    replaced = pd.concat([hot, nosite, empty])[["pump_id", "timestamp"]]
    keep = ~clean.set_index(["pump_id", "timestamp"]).index.isin(
        replaced.set_index(["pump_id", "timestamp"]).index
    )
    schema = pq.read_schema(next(part.glob("*.parquet")))
    pq.write_table(
        pa.Table.from_pandas(clean[keep], schema=schema, preserve_index=False),
        next(part.glob("*.parquet")),
    )
    # A sender's file declares nothing non-nullable: the nulls must reach validation.
    loose = pa.schema([f.with_nullable(True) for f in schema])
    pq.write_table(
        pa.Table.from_pandas(bad, schema=loose, preserve_index=False),
        part / "late-arrivals.parquet",
    )
    return int((~keep).sum())


@pytest.fixture(scope="session")
def workspace(tmp_path_factory: pytest.TempPathFactory, ray_session: Any) -> dict[str, Any]:
    """Simulated, fault-injected, ingested and trained once; shared by the tests here."""
    from pumpfleet.evaluation_run import run_evaluate
    from pumpfleet.search_space import SearchSpace
    from ray_jobs.ingest import ingest_and_log
    from ray_jobs.train import run_train

    home = tmp_path_factory.mktemp("ws")
    settings = Settings(home=home)
    sim = simulate(SimulationConfig(pumps=24, days=50, seed=5), str(settings.data_dir))
    removed = inject_faults(settings.data_dir)
    cfg = WindowConfig()
    ingest = ingest_and_log(settings, str(settings.data_dir), str(settings.features_dir), cfg)
    train = run_train(settings, "latest", SearchSpace(lr=[1e-2], epochs=12))
    reg = Registry(settings.tracking_uri)
    challengers = {c: reg.version_by_alias(model_name(c), CHALLENGER) for c in PUMP_CLASSES}
    evaluate = run_evaluate(settings)
    # the aliases as the fixture left them: the tests of other modules (in whatever order
    # pytest-xdist runs the files) register and promote versions of their own
    champions = {c: reg.version_by_alias(model_name(c), CHAMPION) for c in PUMP_CLASSES}
    return {
        "challengers": challengers,
        "champions": champions,
        "settings": settings,
        "simulated_rows": sim["readings"] - removed,
        "window_config": cfg,
        "ingest": ingest,
        "train": train,
        "evaluate": evaluate,
    }
