"""What one task of the Ray Data ingest does with one block of whole pumps, in the
worker, as plain functions over a batch of block descriptions (``block``: its number,
``files``: its input files), which ``ray_jobs.ingest`` maps with ``map_batches``.

A block is a group of input files that shares no pump with any other group
(``pumpfleet.ingest_stream.file_blocks``, as the single process reads them), so no
shuffle is needed. Pass one (:func:`validate_blocks`) reads a block, validates it with
the functions the single process calls (``pumpfleet.ingest_parts.parts_of``), writes
its quarantined rows and spills its good readings (float32, Arrow IPC) under the run's
own prefix, and returns only the small parts (counts, statistics, settings sample).
Pass two (:func:`window_blocks`), once the splits and regimes are decided, reads each
block's readings back, writes its windows, one Parquet file per class, with the single
process's writer options, and returns its per-regime statistics. Every file is named
by its block, so a task run again (a lost node) writes the same files again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pumpfleet import storage
from pumpfleet.block_stats import regime_stats_frame
from pumpfleet.block_windows import class_windows
from pumpfleet.ingest_block import to_ipc
from pumpfleet.ingest_memory import reused_memory
from pumpfleet.ingest_parts import parts_of
from pumpfleet.ingest_stream import ClassWriters, read_files
from pumpfleet.ingestion import IngestPlan
from pumpfleet.windows import window_schema

SCRATCH = "blocks.tmp"  # under the run's prefix; removed before the manifest lists it


def block_file(block: int) -> str:
    return f"part-{block:05d}.parquet"


def scratch_name(block: int) -> str:
    return f"block-{block:05d}.arrow"


def scratch_file(run: str, block: int) -> str:
    """Where a block's good readings wait between the passes."""
    return storage.join(run, SCRATCH, scratch_name(block))


def block_items(blocks: Sequence[Sequence[str]]) -> list[dict[str, Any]]:
    """The rows Ray Data maps over: one per block."""
    return [{"block": i, "files": list(files)} for i, files in enumerate(blocks)]


def _blocks(batch: pa.Table) -> list[int]:
    return [int(b) for b in batch.column("block").to_pylist()]


def validate_blocks(batch: pa.Table, plan: IngestPlan, run: str) -> pa.Table:
    """Pass one over a batch of blocks: each block's ``counts``, ``stats`` and
    ``sample`` (IPC blobs) and its ``quarantined`` rows; the quarantined rows written
    to ``quarantine/``, the good readings spilled (:func:`scratch_file`)."""
    out: dict[str, list[Any]] = {"block": [], "counts": [], "stats": [], "sample": []}
    out["quarantined"] = []
    files = batch.column("files").to_pylist()
    # the batch's two folders (one run: one filesystem), resolved and made once each
    # (a round trip on S3), not once a block
    fs, quarantine = storage.resolve(storage.join(run, "quarantine"))
    scratch = storage.resolve(storage.join(run, SCRATCH))[1]
    made: set[str] = set()

    def folder(path: str) -> str:
        if path not in made:
            fs.create_dir(path, recursive=True)
            made.add(path)
        return path

    with reused_memory():
        for block, names in zip(_blocks(batch), files, strict=True):
            parts = parts_of(read_files(plan, names), plan.fleet, plan.files)
            q = parts.quarantine
            if q is not None:
                pq.write_table(q, f"{folder(quarantine)}/{block_file(block)}", filesystem=fs)
            if parts.readings.num_rows:
                path = f"{folder(scratch)}/{scratch_name(block)}"
                with (
                    fs.open_output_stream(path) as f,
                    pa.ipc.new_stream(f, parts.readings.schema) as writer,
                ):
                    writer.write_table(parts.readings)
            out["block"].append(block)
            out["counts"].append(to_ipc(parts.counts))
            out["stats"].append(to_ipc(parts.stats))
            out["sample"].append(to_ipc(parts.sample))
            out["quarantined"].append(0 if q is None else q.num_rows)
    return pa.table(
        {
            "block": pa.array(out["block"], pa.int64()),
            **{k: pa.array(out[k], pa.binary()) for k in ("counts", "stats", "sample")},
            "quarantined": pa.array(out["quarantined"], pa.int64()),
        }
    )


def window_blocks(
    batch: pa.Table,
    plan: IngestPlan,
    run: str,
    failures: Mapping[str, Sequence[int]],
    splits: Mapping[str, str],
    cutoff_ms: int | None,
    centres: Mapping[str, tuple[np.ndarray, np.ndarray]],
) -> pa.Table:
    """Pass two over a batch of blocks: each block's windows written under
    ``windows/pump_class=<c>/`` (:func:`block_file`); returns each block's per-(pump,
    class, regime) statistics (``regime_stats``, an IPC blob; empty without regimes or
    readings). The spilled readings stay until the driver removes them all, so that a
    task run again (a lost node) finds them."""
    fleet, cfg = plan.fleet, plan.cfg
    blobs = []
    with reused_memory():
        for block in _blocks(batch):
            fs, path = storage.resolve(scratch_file(run, block))
            if fs.get_file_info(path).type == pafs.FileType.NotFound:  # all quarantined
                blobs.append(b"")
                continue
            with fs.open_input_stream(path) as f:
                readings = pa.ipc.open_stream(f).read_all()
            blob = b""
            if centres:
                frame = regime_stats_frame(readings, centres, fleet.channel_names, fleet.settings)
                if len(frame):
                    blob = to_ipc(pa.Table.from_pandas(frame, preserve_index=False))
            writers = ClassWriters(run, window_schema(cfg, len(plan.layout)), block_file(block))
            for cls, table, per_split in class_windows(
                readings, failures, splits, cfg, plan.layout, cutoff_ms
            ):
                writers.write(cls, table, per_split)
            writers.close()
            blobs.append(blob)
    return pa.table({"regime_stats": pa.array(blobs, pa.binary())})
