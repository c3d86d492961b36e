"""Ingest on Ray Data: validate → quarantine bad rows with reasons → windows and labels
per pump → a feature snapshot (Parquet, partitioned by pump class) with its specs.

    python -m ray_jobs.ingest --source DATASET [--out FEATURES_DIR] [--single-process]

Validation and windowing need a pump's rows together. Where the input files hold whole
pumps (the groups of files that share pumps, ``pumpfleet.ingest_stream.file_groups``,
are all small: a simulated fleet's files each hold whole pumps), there is no shuffle:
Ray Data maps the groups, a few per CPU, and each task validates its group with the
functions the single process calls and, in a second pass once the splits are decided,
writes its windows itself (``pumpfleet.ingest_tasks``); the driver gets small parts
only. Otherwise there is one shuffle: the readings are sorted by pump, so that each
block holds whole pumps, and each block is validated (``pumpfleet.ingest_parts``);
its windows are cut as Ray Data writes them. Either way the counts, splits and
statistics come from the small per-block parts (``pumpfleet.ingestion``).
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import Any, cast

import pandas as pd
import pyarrow as pa
import ray
from ray.data.context import ShuffleStrategy
from ray.data.datasource import Partitioning
from ray.data.datasource.partitioning import PartitionStyle

from pumpfleet import storage
from pumpfleet.block_stats import class_regime_statistics
from pumpfleet.entry import exiting, run_main
from pumpfleet.feature_specs import fit_class_regimes
from pumpfleet.ingest_parts import (
    block_parts,
    compact_strings,
    from_ipc,
    quarantined_rows,
    regime_statistics_of,
    windows_of,
)
from pumpfleet.ingest_stream import BLOCK_ROWS, file_groups, run_ingest_stream
from pumpfleet.ingest_tasks import SCRATCH, block_items, validate_blocks, window_blocks
from pumpfleet.ingestion import (
    IngestPlan,
    Pumps,
    Stages,
    class_specs,
    failures,
    log_summary,
    plan_ingest,
    publish_snapshot,
    split_pumps,
    window_counts,
)
from pumpfleet.job_options import add_ingest_args, window_config
from pumpfleet.regimes import RegimeFit
from pumpfleet.settings import Settings, get_settings
from pumpfleet.windows import WindowConfig
from ray_jobs._ray import cluster_cpus, init_ray

log = logging.getLogger(__name__)

# The most rows of a group of files sharing pumps that one task takes; where pumps span
# more (files by day, say), the readings are shuffled by pump instead.
MAX_BLOCK_ROWS = 4 * BLOCK_ROWS


def _read(files: list[str], fs: Any, base_dir: str, blocks: int) -> ray.data.Dataset:
    """The readings with their class (from the path) and source file, set up for the
    grouping by pump that follows."""
    ctx = ray.data.DataContext.get_current()
    # Ray's first Parquet reader: the second starts 32 footer-reading actors per read,
    # which took 16 of 20 s to read 10M rows on 2 CPUs (the files are checked already).
    v2, ctx.use_datasource_v2 = ctx.use_datasource_v2, False
    try:
        ds = ray.data.read_parquet(
            files,
            filesystem=fs,
            partitioning=Partitioning(PartitionStyle.HIVE, base_dir=base_dir),
            include_paths=True,
            override_num_blocks=min(len(files), blocks),
        )
    finally:
        ctx.use_datasource_v2 = v2
    # The hash shuffle's aggregator actors took more than twice as long on 2 CPUs
    # (27 s against 12 s to group 10M rows).
    ds.context.shuffle_strategy = ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
    return ds.map_batches(compact_strings, batch_format="pyarrow", batch_size=None)


def _blocks(rows: int, cpus: int) -> int:
    """Blocks to read into. The sort-based shuffle makes as many partitions as it gets
    blocks, and each partition is one task of validation: 8 per CPU balance those tasks
    (16 for 10M rows on 2 CPUs; 32 were no faster), but no block under 250k rows, since
    tasks cost overhead (for 1M rows validation took 9.9 s with 4 blocks, 11.5 s with 16)."""
    return max(1, min(8 * cpus, rows // 250_000))


def _block_rows(rows: int, cpus: int) -> int:
    """Rows a task of the shuffle-free path takes at most (whole file groups): the
    single process's block, or fewer, so that every CPU gets four or more."""
    return max(10_000, min(BLOCK_ROWS, -(-rows // (4 * cpus))))


def _parts_table(parts: ray.data.Dataset, column: str) -> pd.DataFrame:
    tables = [
        t
        for batch in parts.select_columns([column]).iter_batches(
            batch_format="pyarrow", batch_size=None
        )
        for t in from_ipc(batch.column(column))  # type: ignore[union-attr,operator]
    ]
    if not tables:
        return pd.DataFrame()
    return pa.concat_tables(tables, promote_options="permissive").to_pandas()


def run_ingest(
    source: str,
    features_root: str,
    cfg: WindowConfig,
    stages: dict[str, float] | None = None,
    plan: IngestPlan | None = None,
) -> dict[str, Any]:
    """Turn a fleet dataset into a feature snapshot; returns the job summary. ``stages``,
    if given, receives the seconds each stage took; ``plan``, the caller's
    :func:`plan_ingest` of the same arguments (its files hashed once)."""
    started = time.monotonic()
    stage = Stages(stages)
    plan = plan or plan_ingest(source, features_root, cfg)
    if plan.up_to_date is not None:
        return plan.up_to_date
    cpus = cluster_cpus()
    groups = file_groups(plan, _block_rows(plan.rows_in, cpus))
    stage("scan")
    if max(rows for _, rows in groups) <= MAX_BLOCK_ROWS:
        done = _by_blocks(plan, [files for files, _ in groups], cpus, stage)
    else:
        done = _shuffled(plan, cpus, stage)
    tmp, pumps, fits, regime_stats = done
    specs = class_specs(plan, pumps, fits, regime_stats)
    wfs, wpath = storage.resolve(storage.join(tmp, "windows"))
    windows = window_counts(wfs, wpath)
    summary = publish_snapshot(plan, tmp, pumps, specs, fits, windows, started)
    stage("publish")
    log.info("snapshot %s written: %s", plan.snapshot_id, summary)
    return {**summary, "snapshot_id": plan.snapshot_id, "up_to_date": False}


Done = tuple[str, Pumps, dict[str, RegimeFit], dict[str, Any]]


def _splits_and_regimes(
    plan: IngestPlan, parts: ray.data.Dataset
) -> tuple[Pumps, dict[str, RegimeFit]]:
    """The pumps' splits from the blocks' counts and statistics, and each class's
    regimes from their samples (none where the config asks for none)."""
    pumps = split_pumps(plan, _parts_table(parts, "counts"), _parts_table(parts, "stats"))
    if not plan.cfg.regimes:
        return pumps, {}
    return pumps, fit_class_regimes(
        _parts_table(parts, "sample"), pumps.splits, plan.fleet.settings
    )


def _by_blocks(plan: IngestPlan, blocks: list[list[str]], cpus: int, stage: Stages) -> Done:
    """No shuffle: each task takes a group of files that holds whole pumps, validates
    it, and (once the splits are known) writes its windows itself; the driver gets the
    small parts only (``pumpfleet.ingest_tasks``)."""
    tmp = plan.staging()
    items = block_items(blocks)
    # A task takes several blocks in turn, so that the memory it keeps between blocks
    # (pumpfleet.ingest_memory) is not given back and asked for again per block; four
    # tasks per CPU keep the CPUs busy to the end.
    tasks = min(len(items), 4 * cpus)
    parts = (
        ray.data.from_items(items, override_num_blocks=tasks)
        .map_batches(
            cast(Any, validate_blocks),
            fn_kwargs={"plan": plan, "run": tmp},
            batch_format="pyarrow",
            batch_size=None,
        )
        .drop_columns(["quarantined"])
        .materialize()
    )
    stage("validate")
    pumps, fits = _splits_and_regimes(plan, parts)
    fleet = plan.fleet
    stage("splits_and_stats")
    done = ray.data.from_items(items, override_num_blocks=tasks).map_batches(
        cast(Any, window_blocks),
        fn_kwargs={
            "plan": plan,
            "run": tmp,
            "failures": failures(plan.source),
            "splits": pumps.splits,
            "cutoff_ms": pumps.cutoff,
            "centres": {c: (f.center, f.scale) for c, f in fits.items()},
        },
        batch_format="pyarrow",
        batch_size=None,
    )
    per_regime = _parts_table(done, "regime_stats")
    storage.delete(storage.join(tmp, SCRATCH))
    regime_stats = (
        class_regime_statistics(per_regime, pumps.splits, fleet.channel_names)
        if len(per_regime)
        else {}
    )
    stage("windows")
    return tmp, pumps, fits, regime_stats


def _shuffled(plan: IngestPlan, cpus: int, stage: Stages) -> Done:
    """One shuffle, where pumps span files: sorted by pump, every block holds whole
    pumps (the range partitioning sends a key to one block), and each block is
    validated at once; what comes out is small but for the good readings (float32),
    which the windows are cut from."""
    parts = (
        _read(plan.files, plan.fs, plan.base_dir, _blocks(plan.rows_in, cpus))
        .sort("pump_id")
        .map_batches(
            cast(Any, block_parts),
            fn_kwargs={"fleet": plan.fleet, "files": plan.files},
            batch_format="pyarrow",
            batch_size=None,
        )
        .materialize()
    )
    stage("validate")

    pumps, fits = _splits_and_regimes(plan, parts)
    fleet = plan.fleet
    regime_stats = {}
    if fits:
        per_pump = parts.select_columns(["readings"]).map_batches(
            regime_statistics_of,
            fn_kwargs={
                "fits": {c: (f.center, f.scale) for c, f in fits.items()},
                "channels": fleet.channel_names,
                "settings": fleet.settings,
            },
            batch_format="pyarrow",
            batch_size=None,
        )
        regime_stats = class_regime_statistics(
            _parts_table(per_pump, "regime_stats"), pumps.splits, fleet.channel_names
        )
    stage("splits_and_stats")

    tmp = plan.staging()
    wfs, wpath = storage.resolve(storage.join(tmp, "windows"))
    parts.select_columns(["readings"]).map_batches(
        windows_of,
        fn_kwargs={
            "failures": failures(plan.source),
            "splits": pumps.splits,
            "cfg": plan.cfg,
            "channels": plan.layout,
            "cutoff_ms": pumps.cutoff,
        },
        batch_format="pyarrow",
        batch_size=None,
    ).write_parquet(wpath, filesystem=wfs, partition_cols=["pump_class"])
    stage("windows")
    if pumps.n_bad:
        qfs, qpath = storage.resolve(storage.join(tmp, "quarantine"))
        parts.select_columns(["quarantine"]).map_batches(
            quarantined_rows, batch_format="pyarrow", batch_size=None
        ).write_parquet(qpath, filesystem=qfs)
    stage("quarantine")
    return tmp, pumps, fits, regime_stats


def ingest_and_log(
    settings: Settings,
    source: str,
    features_root: str,
    cfg: WindowConfig,
    single_process: bool = False,
    plan: IngestPlan | None = None,
) -> dict[str, Any]:
    """:func:`run_ingest` (or, with ``single_process``, the same array functions called
    in this process: :func:`pumpfleet.ingest_stream.run_ingest_stream`), and a new
    snapshot's summary recorded in MLflow. ``plan``: as :func:`run_ingest` takes it."""
    if single_process:
        summary = run_ingest_stream(source, features_root, cfg, plan=plan)
    else:
        summary = run_ingest(source, features_root, cfg, plan=plan)
    if not summary["up_to_date"]:
        summary["mlflow_run_id"] = log_summary(settings, summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ray_jobs.ingest", description=__doc__)
    add_ingest_args(parser)
    args = parser.parse_args(argv)

    def job() -> dict[str, Any]:
        settings = get_settings()
        source = args.source or settings.data_uri
        cfg = window_config(args)
        if not args.single_process:
            init_ray(settings)
        out = args.out or settings.features_uri
        return ingest_and_log(settings, source, out, cfg, args.single_process)

    return run_main(job)


if __name__ == "__main__":
    raise SystemExit(exiting(main()))
