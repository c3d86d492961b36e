"""What one pass over a block of whole pumps yields, as plain functions that the ingest
maps over groups of files that share no pump: the single process
(``pumpfleet.ingest_stream``) one after another, Ray Data's tasks
(``pumpfleet.ingest_tasks``) side by side, and, where pumps span files, Ray Data over
the blocks of its one shuffle (by pump).

Validation needs a pump's rows together, and so does windowing, so each block holds
whole pumps. :func:`parts_of` validates a block (``pumpfleet.ingest_block``) and gives
its small parts (rows per file and reason, each pump's statistics and settings sample,
``pumpfleet.block_stats``), its good readings, which windows are cut from, and its
quarantined rows. The splits, which need every pump, are then decided from those parts
(``pumpfleet.ingestion``, ``pumpfleet.feature_specs``), and the windows are cut
(``pumpfleet.block_windows``) as they are written: six times the size of the readings
they come from, they are never held.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from pumpfleet.block_stats import (
    counts_table,
    groups,
    readings_table,
    regime_stats_frame,
    sample_table,
    stats_table,
)
from pumpfleet.block_windows import block_windows
from pumpfleet.ingest_block import (  # noqa: F401  (to_ipc, from_ipc, compact_strings: used here and by callers)
    PATH,
    Block,
    compact_strings,
    from_ipc,
    read_block,
    reason_names,
    to_ipc,
    validate_block,
)
from pumpfleet.ingest_reference import pump_regime_statistics, settings_sample
from pumpfleet.schema import FleetSchema
from pumpfleet.validation import REASON
from pumpfleet.windows import WindowConfig, window_schema

__all__ = [
    "PATH",
    "Parts",
    "block_parts",
    "parts_of",
    "pump_parts",
    "pump_regime_statistics",
    "settings_sample",
    "windows_of",
]


@dataclass
class Parts:
    """A validated block's parts: rows per file and reason, statistics and settings
    sample per (pump, class), good readings (float32) and quarantined rows (None: none)."""

    counts: pa.Table
    stats: pa.Table
    sample: pa.Table
    readings: pa.Table
    quarantine: pa.Table | None


def quarantine_table(
    block: Block, rows: np.ndarray, reason: np.ndarray, fleet: FleetSchema
) -> pa.Table:
    """The quarantined rows, every column of the reading, their ``source_file`` and
    ``quarantine_reason``, in validation order."""
    names = np.asarray(reason_names(fleet), dtype=object)

    def strings(codes: np.ndarray, values: np.ndarray) -> pa.Array:
        lookup = np.empty(len(values) + 1, dtype=object)  # code -1 takes the last: None
        lookup[:-1] = values
        return pa.array(lookup[codes[rows]].tolist(), pa.string())

    ts = pa.array(block.ts[rows], pa.int64(), mask=block.ts_missing[rows]).cast(block.ts_type)
    cols: dict[str, pa.Array] = {
        "pump_id": strings(block.pump.codes, block.pump.names),
        "pump_class": strings(block.cls.codes, block.cls.names),
        "site": strings(block.site.codes, block.site.names),
        "timestamp": ts,
    }
    for c in (*fleet.settings, *fleet.channels):
        cols[c] = pa.array(block.values[c][rows])
    cols["source_file"] = strings(block.path.codes, block.path.names)
    cols[REASON] = pa.array(names[reason[rows]].tolist(), pa.string())
    return pa.table(cols)


def parts_of(table: pa.Table, fleet: FleetSchema, files: Sequence[str]) -> Parts:
    """Validate a block of whole pumps' rows (with their source ``path``, one of
    ``files``, and ``pump_class``) and give its :class:`Parts`."""
    block = read_block(table, fleet, files)
    reason = validate_block(block, fleet)
    good = reason == 0
    rows = np.flatnonzero(good)
    bad = np.flatnonzero(~good)
    g = groups(block.pump.codes[rows], block.cls.codes[rows])
    values = {k: v[rows] for k, v in block.values.items()}
    layout = [*fleet.channel_names, *fleet.settings]
    return Parts(
        counts=counts_table(block, reason, reason_names(fleet)),
        stats=stats_table(
            block.pump.names, block.cls.names, g, block.ms[rows], values, fleet.channel_names
        ),
        sample=sample_table(block.pump.names, block.cls.names, g, values, fleet.settings),
        readings=readings_table(block, rows, layout),
        quarantine=quarantine_table(block, bad, reason, fleet) if len(bad) else None,
    )


def block_parts(table: pa.Table, fleet: FleetSchema, files: Sequence[str]) -> pa.Table:
    """:func:`parts_of` as one row of IPC blobs (``counts``, ``stats``, ``sample``,
    ``readings``, ``quarantine``; empty where there is none), for Ray Data."""
    parts = parts_of(table, fleet, files)
    blobs = {
        "counts": to_ipc(parts.counts),
        "stats": to_ipc(parts.stats),
        "sample": to_ipc(parts.sample),
        "readings": to_ipc(parts.readings) if parts.readings.num_rows else b"",
        "quarantine": b"" if parts.quarantine is None else to_ipc(parts.quarantine),
    }
    return pa.table({k: pa.array([v], pa.binary()) for k, v in blobs.items()})


def pump_parts(df: pd.DataFrame, fleet: FleetSchema, files: Sequence[str]) -> pa.Table:
    """:func:`block_parts` of rows given as a pandas frame (whole pumps: one or more)."""
    return block_parts(pa.Table.from_pandas(df, preserve_index=False), fleet, files)


def windows_of(
    batch: pa.Table,
    failures: Mapping[str, Sequence[int]],
    splits: Mapping[str, str],
    cfg: WindowConfig,
    channels: Sequence[str],
    cutoff_ms: int | None = None,
) -> pa.Table:
    """The labelled windows of a batch of blocks' ``readings`` (``channels``: what a
    window holds per step, channels then settings)."""
    tables = [
        block_windows(t, failures, splits, cfg, channels, cutoff_ms)
        for t in from_ipc(batch.column("readings"))
    ]
    return pa.concat_tables(tables) if tables else window_schema(cfg, len(channels)).empty_table()


def regime_statistics_of(
    batch: pa.Table,
    fits: Mapping[str, tuple[np.ndarray, np.ndarray]],
    channels: Sequence[str],
    settings: Sequence[str],
) -> pa.Table:
    """Per (pump, class, regime) statistics (:func:`pumpfleet.block_stats.regime_stats_frame`)
    of a batch of blocks' ``readings``, as one IPC blob per block (``regime_stats``)."""
    blobs = []
    for t in from_ipc(batch.column("readings")):
        df: pd.DataFrame = regime_stats_frame(t, fits, channels, settings)
        blobs.append(to_ipc(pa.Table.from_pandas(df, preserve_index=False)) if len(df) else b"")
    return pa.table({"regime_stats": pa.array(blobs, pa.binary())})


def quarantined_rows(batch: pa.Table) -> pa.Table:
    tables = from_ipc(batch.column("quarantine"))
    return pa.concat_tables(tables, promote_options="permissive") if tables else pa.table({})
