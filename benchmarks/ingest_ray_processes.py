"""Where the Ray Data ingest's CPU and memory go, process by process, against Ray's own
floor: the summed RSS (and PSS) of a local Ray with Ray Data started and the ingest's
modules imported, before any data; then each process's CPU seconds and RSS over one
ingest of the fleet ``benchmarks.ingest`` simulates (``--rows``).

    python -m benchmarks.ingest_ray_processes [--rows 10000000] [--cpus 2]

Ends with ``ray_cpu_us_per_row=... workers_us_per_row=... floor_gb=...``.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

# As the benchmark's Ray arm: what the driver runs, imported before the timing.
import sklearn.cluster
import sklearn.metrics  # noqa: F401

from benchmarks._local_ray import local_ray
from benchmarks.ingest import fleet_dataset
from pumpfleet.settings import Settings, quiet_telemetry
from pumpfleet.tables import format_table
from pumpfleet.windows import WindowConfig

GB = 1e9


def _warm(batch: Any) -> Any:
    import pumpfleet.ingest_tasks  # noqa: F401  (what a task of the ingest imports)

    return batch


def _kind(cmdline: list[str], me: int, pid: int) -> str:
    if pid == me:
        return "driver"
    text = " ".join(cmdline)
    for name in ("gcs_server", "raylet", "dashboard", "log_monitor", "monitor.py"):
        if name in text:
            return name
    return text.split(" ")[0] if text.startswith("ray::") else text[-40:]


def _processes(psutil: Any) -> dict[int, tuple[str, float, int, int]]:
    me = psutil.Process()
    out = {}
    for p in [me, *me.children(recursive=True)]:
        try:
            t, m = p.cpu_times(), p.memory_full_info()
            out[p.pid] = (_kind(p.cmdline(), me.pid, p.pid), t.user + t.system, m.rss, m.pss)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ingest_ray_processes")
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--cpus", type=int, default=2)
    args = parser.parse_args(argv)
    import ray  # noqa: I001  (psutil comes with Ray, in its thirdparty_files)
    import psutil

    from ray_jobs.ingest import run_ingest

    root = Settings().home / "benchmarks"
    source, _ = fleet_dataset(args.rows, 180, 0, root)
    quiet_telemetry(Settings())
    out = Path(tempfile.mkdtemp(prefix="ingest-ray-", dir=root))
    try:
        with local_ray(args.cpus, progress_bars=False):
            items = [{"i": i} for i in range(4 * args.cpus)]
            ds = ray.data.from_items(items, override_num_blocks=len(items))
            ds.map_batches(_warm).materialize()
            time.sleep(2)
            floor = _processes(psutil)
            t = time.perf_counter()
            summary = run_ingest(str(source), str(out / "features"), WindowConfig())
            wall = time.perf_counter() - t
            after = _processes(psutil)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    rows_in = summary["rows_in"]
    kinds: dict[str, list[float]] = {}
    for pid, (kind, cpu, rss, _) in after.items():
        k = kinds.setdefault(kind, [0, 0.0, 0.0])
        k[0] += 1
        k[1] += cpu - (floor[pid][1] if pid in floor else 0.0)
        k[2] += rss
    total = sum(k[1] for k in kinds.values())
    rows = [
        [name, int(n), f"{cpu:.2f}", f"{cpu / rows_in * 1e6:.2f}", f"{rss / GB:.2f}"]
        for name, (n, cpu, rss) in sorted(kinds.items(), key=lambda kv: -kv[1][1])
    ]
    print(f"{rows_in:,} rows on {args.cpus} CPUs in {wall:.1f} s")
    print(format_table(["process", "n", "CPU s", "CPU us/row", "RSS GB at end"], rows))
    floor_rss, floor_pss = sum(p[2] for p in floor.values()), sum(p[3] for p in floor.values())
    print(f"Ray's floor before any data: RSS {floor_rss / GB:.2f} GB, PSS {floor_pss / GB:.2f} GB")
    workers = sum(k[1] for name, k in kinds.items() if name == "ray::IDLE")
    print(
        f"ray_cpu_us_per_row={total / rows_in * 1e6:.2f} "
        f"workers_us_per_row={workers / rows_in * 1e6:.2f} floor_gb={floor_rss / GB:.2f}"
    )


if __name__ == "__main__":
    main()
