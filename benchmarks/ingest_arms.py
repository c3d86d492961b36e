"""One arm of ``benchmarks.ingest``, in a fresh interpreter of its own, so that no arm's
memory counts for another:

    python -m benchmarks.ingest_arms ARM DATASET OUT [--cpus N] [--windows DIR]

ARM is ``reference`` (the plain pandas ingest, ``benchmarks.ingest_single``),
``vectorised`` (``pumpfleet.ingest_stream``: the array core in one process, end to end:
plan and digests, quarantine, per-file counts, atomic publication), ``ray``
(``ray_jobs.ingest.run_ingest`` on a local Ray of N CPUs; ``ray.init`` not timed) or
``floor`` (read the input into Arrow, file by file, and write the windows in ``DIR``, the vectorised
arm's, as the vectorised arm writes them: no compute; only the read and the writes are
timed). Prints one JSON line: what the arm counted, its seconds, and the CPU seconds of
its process and every process under it over the timed part (``cpu_seconds``).
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path
from typing import Any

# What the arms run, imported before any timing starts (a long-running job has them).
import sklearn.cluster
import sklearn.metrics  # noqa: F401

from benchmarks._local_ray import local_ray
from benchmarks.ingest_single import single_process
from pumpfleet.ingest_stream import ROW_GROUP, WRITE_OPTIONS, run_ingest_stream
from pumpfleet.settings import Settings, quiet_telemetry
from pumpfleet.snapshot import open_snapshot
from pumpfleet.windows import WindowConfig


def _tree_cpu() -> float:
    """User and system seconds of this process and every live process under it."""
    import ray  # noqa: F401, I001  (psutil comes with Ray, in its thirdparty_files)
    import psutil

    me = psutil.Process()
    total = 0.0
    for p in [me, *me.children(recursive=True)]:
        try:
            t = p.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


def _reference(source: Path, out: Path) -> dict[str, Any]:
    return single_process(source, out, WindowConfig())


def _vectorised(source: Path, out: Path) -> dict[str, Any]:
    stages: dict[str, float] = {}
    summary = run_ingest_stream(str(source), str(out / "features"), WindowConfig(), stages)
    snap = open_snapshot(str(out / "features"), summary["snapshot_id"])
    return {**summary, "stages": stages, "specs": snap.manifest["specs"], "data": snap.data}


def _floor(source: Path, out: Path, windows: Path) -> dict[str, Any]:
    import pyarrow.dataset as pads
    import pyarrow.parquet as pq

    # File by file, as the vectorised arm reads (its memory bounded too).
    t, c = time.perf_counter(), time.process_time()
    data = pads.dataset(source / "readings", format="parquet", partitioning="hive")
    n_rows = sum(pq.read_table(f).num_rows for f in data.files)
    read, cpu = time.perf_counter() - t, time.process_time() - c
    n_windows, write = 0, 0.0
    for part in sorted(p for p in windows.iterdir() if p.is_dir()):
        (out / part.name).mkdir(parents=True)
        for f in sorted(part.glob("*.parquet")):
            src = pq.ParquetFile(f)
            target = out / part.name / f.name
            with pq.ParquetWriter(target, src.schema_arrow, **WRITE_OPTIONS) as writer:
                for i in range(src.num_row_groups):
                    group = src.read_row_group(i)  # not timed: the windows exist already
                    t, c = time.perf_counter(), time.process_time()
                    writer.write_table(group, row_group_size=max(ROW_GROUP, group.num_rows))
                    write += time.perf_counter() - t
                    cpu += time.process_time() - c
                    n_windows += group.num_rows
    return {
        "rows_in": n_rows,
        "windows_written": n_windows,
        "stages": {"read": read, "write": write},
        "seconds": read + write,
        "cpu_seconds": cpu,
    }


def _ray(source: Path, out: Path, cpus: int) -> dict[str, Any]:
    from ray_jobs.ingest import run_ingest  # imports Ray: before the clock starts

    quiet_telemetry(Settings())
    t = time.perf_counter()
    with local_ray(cpus, progress_bars=False):
        init = time.perf_counter() - t
        stages: dict[str, float] = {}
        cpu0, t = _tree_cpu(), time.perf_counter()
        summary = run_ingest(str(source), str(out / "features"), WindowConfig(), stages=stages)
        seconds, cpu = time.perf_counter() - t, _tree_cpu() - cpu0
    snap = open_snapshot(str(out / "features"), summary["snapshot_id"])
    return {
        **summary,
        "stages": stages,
        "specs": snap.manifest["specs"],
        "data": snap.data,
        "init_seconds": init,
        "seconds": seconds,
        "cpu_seconds": cpu,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ingest_arms")
    parser.add_argument("arm", choices=["reference", "vectorised", "ray", "floor"])
    parser.add_argument("source", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--windows", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.arm == "ray":
        result = _ray(args.source, args.out, args.cpus)
    else:
        cpu0, t = _tree_cpu(), time.perf_counter()
        if args.arm == "reference":
            result = _reference(args.source, args.out)
        elif args.arm == "vectorised":
            result = _vectorised(args.source, args.out)
        else:
            if args.windows is None:
                parser.error("--windows is required for the floor arm")
            result = _floor(args.source, args.out, args.windows)
        if args.arm != "floor":  # the floor times its read and writes only
            result["seconds"], result["cpu_seconds"] = time.perf_counter() - t, _tree_cpu() - cpu0
    result["max_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB
    print(json.dumps(result, default=str))


if __name__ == "__main__":
    main()
