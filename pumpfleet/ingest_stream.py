"""The ingest in one process, streaming: the same array functions that ``ray_jobs.ingest``
maps with Ray Data (``pumpfleet.ingest_parts``), called directly over blocks of whole
pumps, in bounded memory.

A block is a group of input files that share no pump with any other group (a simulated
fleet's files each hold whole pumps, so there a block is a file or a few); blocks are
read one at a time. Pass one validates each block and keeps its small parts (counts,
statistics, settings sample), writes its quarantined rows, and spills its good readings
(float32, Arrow IPC) to a scratch folder; the splits and specs are decided from the
parts (``pumpfleet.ingestion``); pass two reads each block's readings back, adds its
per-regime statistics and writes its windows, one Parquet file per class with large
row groups. The manifest, written last, publishes the snapshot.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pumpfleet import storage
from pumpfleet.block_stats import class_regime_statistics, regime_stats_frame
from pumpfleet.block_windows import class_windows
from pumpfleet.feature_specs import fit_class_regimes
from pumpfleet.ingest_memory import reused_memory
from pumpfleet.ingest_parts import PATH, parts_of
from pumpfleet.ingestion import (
    IngestPlan,
    Stages,
    class_specs,
    failures,
    plan_ingest,
    publish_snapshot,
    split_pumps,
)
from pumpfleet.windows import WindowConfig, window_schema

log = logging.getLogger(__name__)

BLOCK_ROWS = 250_000  # rows read and validated at a time (files are not split): blocks
# that stay in cache ran 25% faster than 1M-row ones and peaked at half the memory
ROW_GROUP = 65_536  # windows per Parquet row group (about 60 MB at 24 x 10 float32)
STRINGS = ["pump_id", "site", "split"]
# How a windows file is written: a dictionary for the strings only (no dictionary pays
# on the window's floats); statistics for every column but the window, whose min and
# max per row group nothing reads (readers filter on the split and keys); data pages
# of Parquet's version 2, whose levels are not compressed: less CPU per window, and
# pyarrow (so Ray Data and pandas) reads the files as before (docs/benchmarks.md).
WRITE_OPTIONS: dict[str, Any] = {
    "use_dictionary": STRINGS,
    "write_statistics": [
        n for n in window_schema(WindowConfig()).names if n not in ("pump_class", "window")
    ],
    "data_page_version": "2.0",
}
KEYS = ["pump_id", "site"]  # the columns of a windows file worth a dictionary


def _hive_keys(path: str, base_dir: str) -> dict[str, str]:
    """The ``key=value`` folders between the dataset's base folder and the file."""
    rel = path[len(base_dir) :] if path.startswith(base_dir) else path
    return dict(p.split("=", 1) for p in rel.strip("/").split("/")[:-1] if "=" in p)


def file_blocks(plan: IngestPlan, block_rows: int = BLOCK_ROWS) -> list[list[str]]:
    """The input files in groups that share no pump, each group's files in the plan's
    order, groups merged (in order) up to ``block_rows`` rows."""
    return [files for files, _ in file_groups(plan, block_rows)]


def file_groups(plan: IngestPlan, block_rows: int = BLOCK_ROWS) -> list[tuple[list[str], int]]:
    """:func:`file_blocks` with each block's rows."""
    parent = list(range(len(plan.files)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[Any, int] = {}
    sizes = []
    for i, f in enumerate(plan.files):
        # As the dictionary Parquet stores: unique codes, not a hash of every string.
        ids = pq.read_table(
            f, columns=["pump_id"], filesystem=plan.fs, read_dictionary=["pump_id"]
        ).column("pump_id")
        sizes.append(len(ids))
        for p in pc.unique(ids).cast(pa.string()).to_pylist():
            j = owner.setdefault(p, i)
            if root(j) != root(i):
                parent[root(i)] = root(j)
    groups: dict[int, list[int]] = {}
    for i in range(len(plan.files)):
        groups.setdefault(root(i), []).append(i)
    blocks: list[list[str]] = []
    rows: list[int] = []
    for members in sorted(groups.values()):
        n = sum(sizes[i] for i in members)
        if not blocks or rows[-1] + n > block_rows:
            blocks.append([])
            rows.append(0)
        blocks[-1] += [plan.files[i] for i in members]
        rows[-1] += n
    return [(sorted(b, key=plan.files.index), n) for b, n in zip(blocks, rows, strict=True)]


def _constant(value: str, n: int) -> pa.Array:
    return pa.DictionaryArray.from_arrays(
        pa.array(np.zeros(n, np.int32)), pa.array([value], pa.string())
    )


def read_files(plan: IngestPlan, files: Sequence[str]) -> pa.Table:
    """The files' rows as Ray Data reads them: with their source ``path`` and the hive
    folders' keys (``pump_class``) as columns."""
    tables = []
    for f in files:
        # The keys as Parquet stores them, dictionaries: no string per row.
        t = pq.read_table(f, filesystem=plan.fs, read_dictionary=KEYS, use_threads=False)
        for k, v in _hive_keys(f, plan.base_dir).items():
            if k not in t.column_names:
                t = t.append_column(k, _constant(v, len(t)))
        tables.append(t.append_column(PATH, _constant(f, len(t))))
    return pa.concat_tables(tables, promote_options="permissive").unify_dictionaries()


class ClassWriters:
    """One Parquet file (``name``) per class under ``windows/pump_class=<c>/``, row groups of
    ``ROW_GROUP`` windows, counting the windows per class and split as they are written."""

    def __init__(self, run: str, schema: pa.Schema, name: str = "part-0.parquet") -> None:
        self.fs, self.root = storage.resolve(storage.join(run, "windows"))
        self.name = name
        self.schema = schema.remove(schema.get_field_index("pump_class"))
        self.writers: dict[str, pq.ParquetWriter] = {}
        self.pending: dict[str, list[pa.Table]] = {}
        self.counts: dict[tuple[str, str], int] = {}

    def write(self, cls: str, windows: pa.Table, per_split: dict[str, int]) -> None:
        """Add a class's windows (without their ``pump_class``) and their number per split."""
        for split, n in per_split.items():
            self.counts[(cls, split)] = self.counts.get((cls, split), 0) + n
        pending = self.pending.setdefault(cls, [])
        pending.append(windows)
        if sum(t.num_rows for t in pending) >= ROW_GROUP:
            self._flush(cls)

    def _flush(self, cls: str) -> None:
        table = pa.concat_tables(self.pending.pop(cls, []))
        if not table.num_rows:
            return
        if cls not in self.writers:
            folder = f"{self.root}/pump_class={cls}"
            self.fs.create_dir(folder, recursive=True)
            self.writers[cls] = pq.ParquetWriter(
                f"{folder}/{self.name}",
                self.schema,
                filesystem=self.fs,
                **WRITE_OPTIONS,
            )
        self.writers[cls].write_table(table, row_group_size=max(ROW_GROUP, table.num_rows))

    def close(self) -> pd.Series:
        """Close the files; the windows written per (class, split)."""
        for cls in list(self.pending):
            self._flush(cls)
        for w in self.writers.values():
            w.close()
        index = pd.MultiIndex.from_tuples(list(self.counts), names=["pump_class", "split"])
        return pd.Series(list(self.counts.values()), index=index, dtype="int64")


def _spilled(folder: Path, n: int) -> Iterator[pa.Table]:
    for i in range(n):
        path = folder / f"block-{i}.arrow"
        if path.exists():
            with pa.OSFile(str(path)) as f:
                yield pa.ipc.open_stream(f).read_all()
            path.unlink()


def _spill(folder: Path, i: int, table: pa.Table) -> None:
    if table.num_rows:
        path = str(folder / f"block-{i}.arrow")
        with pa.OSFile(path, "wb") as f, pa.ipc.new_stream(f, table.schema) as writer:
            writer.write_table(table)


def _frame(tables: list[pa.Table]) -> pd.DataFrame:
    tables = [t for t in tables if t.num_rows]
    if not tables:
        return pd.DataFrame()
    return pa.concat_tables(tables, promote_options="permissive").to_pandas()


def run_ingest_stream(
    source: str,
    features_root: str,
    cfg: WindowConfig,
    stages: dict[str, float] | None = None,
    block_rows: int = BLOCK_ROWS,
    plan: IngestPlan | None = None,
) -> dict[str, Any]:
    """Turn a fleet dataset into a feature snapshot in this process, as
    ``ray_jobs.ingest.run_ingest`` does on Ray; returns the job summary. ``plan``: the
    caller's :func:`plan_ingest` of the same arguments, so the inputs are hashed once."""
    with reused_memory():
        return _ingest(source, features_root, cfg, stages, block_rows, plan)


def _ingest(
    source: str,
    features_root: str,
    cfg: WindowConfig,
    stages: dict[str, float] | None,
    block_rows: int,
    plan: IngestPlan | None,
) -> dict[str, Any]:
    started = time.monotonic()
    stage = Stages(stages)
    plan = plan or plan_ingest(source, features_root, cfg)
    if plan.up_to_date is not None:
        return plan.up_to_date
    blocks = file_blocks(plan, block_rows)
    stage("scan")
    fleet, run = plan.fleet, plan.staging()
    scratch = Path(tempfile.mkdtemp(prefix="pumpfleet-ingest-"))
    try:
        counts, stats, samples = [], [], []
        quarantine: pq.ParquetWriter | None = None
        qfs, qroot = storage.resolve(storage.join(run, "quarantine"))
        for i, files in enumerate(blocks):
            parts = parts_of(read_files(plan, files), fleet, plan.files)
            counts.append(parts.counts)
            stats.append(parts.stats)
            samples.append(parts.sample)
            _spill(scratch, i, parts.readings)
            if parts.quarantine is not None:
                if quarantine is None:
                    qfs.create_dir(qroot, recursive=True)
                    schema = parts.quarantine.schema
                    quarantine = pq.ParquetWriter(f"{qroot}/part-0.parquet", schema, filesystem=qfs)
                quarantine.write_table(parts.quarantine.cast(quarantine.schema))
        if quarantine is not None:
            quarantine.close()
        stage("validate")
        pumps = split_pumps(plan, _frame(counts), _frame(stats))
        fits = (
            fit_class_regimes(_frame(samples), pumps.splits, fleet.settings)
            if plan.cfg.regimes
            else {}
        )
        stage("splits")
        centres = {c: (f.center, f.scale) for c, f in fits.items()}
        writers = ClassWriters(run, window_schema(plan.cfg, len(plan.layout)))
        fail = failures(source)
        per_regime = []
        for readings in _spilled(scratch, len(blocks)):
            if centres:
                per_regime.append(
                    regime_stats_frame(readings, centres, fleet.channel_names, fleet.settings)
                )
            for cls, table, per_split in class_windows(
                readings, fail, pumps.splits, plan.cfg, plan.layout, pumps.cutoff
            ):
                writers.write(cls, table, per_split)
        windows = writers.close()
        stage("windows")
        frames = [f for f in per_regime if len(f)]
        regime_stats = (
            class_regime_statistics(
                pd.concat(frames, ignore_index=True), pumps.splits, fleet.channel_names
            )
            if frames
            else {}
        )
        specs = class_specs(plan, pumps, fits, regime_stats)
        summary = publish_snapshot(plan, run, pumps, specs, fits, windows, started)
        stage("publish")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    log.info("snapshot %s written: %s", plan.snapshot_id, summary)
    return {**summary, "snapshot_id": plan.snapshot_id, "up_to_date": False}
