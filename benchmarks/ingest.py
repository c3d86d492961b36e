"""Ingest: the Ray Data pipeline (``ray_jobs.ingest.run_ingest`` on a local 2-CPU Ray)
against a single-process pandas / pyarrow implementation of the same transformation, on
the same simulated fleet (hourly readings), in the same run.

    python -m benchmarks.ingest [--rows 1000000] [--days 180] [--out RESULT.json]

The fleet is simulated once under the workspace and reused. The baseline
(``benchmarks.ingest_single``) runs in a subprocess of its own: its peak RSS comes from
the kernel. Ray's memory is summed over the driver and every Ray process it started: RSS
sampled every 0.2 s (it counts an object-store page once per process that maps it), PSS
(which shares such pages out) and the object store's use every 2 s. Both must write the
same windows. The machine's load average before each run is recorded: on a shared
machine it says how far to trust a ratio.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pumpfleet.settings import Settings, quiet_telemetry
from pumpfleet.simulator import SimulationConfig, simulate
from pumpfleet.snapshot import open_snapshot
from pumpfleet.tables import format_table
from pumpfleet.windows import WindowConfig

log = logging.getLogger(__name__)
GB = 1e9


def fleet_dataset(rows: int, days: int, seed: int, root: Path) -> tuple[Path, int]:
    """A simulated fleet of at least ``rows`` hourly readings (reused when present)."""
    pumps = -(-rows // (days * 24))
    path = root / f"fleet-{pumps}p-{days}d-s{seed}"
    if not (path / "fleet.json").exists():  # written last: its presence means complete
        simulate(SimulationConfig(pumps=pumps, days=days, seed=seed), str(path), overwrite=True)
    return path, pumps


def _run_single(source: Path, out: Path) -> dict[str, Any]:
    """The baseline in a fresh interpreter, so that neither run's memory counts for the other."""
    cmd = [sys.executable, "-m", "benchmarks.ingest_single", str(source), str(out)]
    t = time.perf_counter()
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["wall_seconds"] = time.perf_counter() - t
    return result


# The Ray side.


class MemorySampler:
    """Peaks of the summed RSS (every ``interval`` s) and PSS (every 2 s) of a process and
    its descendants, and of the object store's use (Ray's internal API, every 2 s)."""

    def __init__(self, pid: int, interval: float = 0.2, object_store: bool = False) -> None:
        # PSS (reading /proc/*/smaps_rollup: 60 ms for 10 processes) and the object store
        # every 2 s, so that sampling costs the run under 5% of a core.
        import ray  # noqa: F401, I001  (psutil comes with Ray, in its thirdparty_files)
        import psutil

        self.psutil = psutil
        self.root = psutil.Process(pid)
        self.interval = interval
        self.object_store = object_store
        self.peak_rss = self.peak_pss = self.peak_store = 0
        self.processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self, full: bool) -> None:
        rss = pss = 0
        procs = [self.root, *self.root.children(recursive=True)]
        for p in procs:
            try:
                if full:
                    info = p.memory_full_info()
                    pss += info.pss
                else:
                    info = p.memory_info()
            except (self.psutil.NoSuchProcess, self.psutil.AccessDenied):
                continue  # a worker that just exited
            rss += info.rss
        self.peak_rss = max(self.peak_rss, rss)
        self.peak_pss = max(self.peak_pss, pss)
        self.processes = max(self.processes, len(procs))

    def _store(self) -> None:
        import ray
        from ray._private.internal_api import get_memory_info_reply, get_state_from_address

        # This run's own cluster: with no address Ray looks for one, and fails when
        # another Ray instance runs on the machine (which then stopped all sampling).
        try:
            state = get_state_from_address(ray.get_runtime_context().gcs_address)
            reply = get_memory_info_reply(state)
        except (ConnectionError, RuntimeError) as e:
            log.warning("object store not sampled: %s", e)
            self.object_store = False
            return
        used = int(reply.store_stats.object_store_bytes_used)
        self.peak_store = max(self.peak_store, used)

    def _run(self) -> None:
        last_full = 0.0
        while not self._stop.is_set():
            full = time.monotonic() - last_full >= 2.0
            if full:
                last_full = time.monotonic()
                if self.object_store:
                    self._store()
            self._sample(full)
            self._stop.wait(self.interval)
        self._sample(full=True)


def _run_ray(source: Path, features: Path, cfg: WindowConfig, cpus: int) -> dict[str, Any]:
    import ray

    from ray_jobs.ingest import run_ingest

    quiet_telemetry(Settings())
    t = time.perf_counter()
    ray.init(
        address="local",
        num_cpus=cpus,
        include_dashboard=False,
        log_to_driver=False,
        _node_ip_address="127.0.0.1",
    )
    init_seconds = time.perf_counter() - t
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        stages: dict[str, float] = {}
        with MemorySampler(os.getpid(), object_store=True) as mem:
            t = time.perf_counter()
            summary = run_ingest(str(source), str(features), cfg, stages=stages)
            seconds = time.perf_counter() - t
    finally:
        ray.shutdown()
    manifest = json.loads((features / summary["snapshot_id"] / "manifest.json").read_text())
    return {
        **summary,
        "seconds": seconds,
        "init_seconds": init_seconds,
        "stages": stages,
        "specs": manifest["specs"],
        "peak_rss": mem.peak_rss,
        "peak_pss": mem.peak_pss,
        "peak_object_store": mem.peak_store,
        "processes": mem.processes,
    }


# Checking and reporting.


def _same_column(a: pa.ChunkedArray, b: pa.ChunkedArray) -> bool:
    """Equal values, NaN equal to NaN (the channels a class lacks are NaN in its windows)."""
    if a.type != b.type:
        return False
    if pa.types.is_fixed_size_list(a.type):
        a, b = a.combine_chunks().flatten(), b.combine_chunks().flatten()
    if pa.types.is_floating(a.type):
        x, y = a.to_numpy(zero_copy_only=False), b.to_numpy(zero_copy_only=False)
        return bool(np.array_equal(x, y, equal_nan=True))
    return bool(a.equals(b))


def compare(ray_windows: Path, single_windows: Path) -> dict[str, Any]:
    """Whether both wrote the same windows: the same class partitions and, in each, the
    same rows (arrays and labels included) once sorted by pump and end time."""
    parts = sorted(p.name for p in ray_windows.iterdir() if p.is_dir())
    other = sorted(p.name for p in single_windows.iterdir() if p.is_dir())
    out: dict[str, Any] = {"same": parts == other, "windows": 0, "differs": []}
    order = [("pump_id", "ascending"), ("end_time", "ascending")]
    for part in parts if out["same"] else []:
        a = pq.read_table(ray_windows / part).sort_by(order)
        b = pq.read_table(single_windows / part).sort_by(order)
        out["windows"] += a.num_rows
        for name in sorted(set(a.column_names) | set(b.column_names)):
            if name not in a.column_names or name not in b.column_names:
                out["differs"].append(f"{part}: column {name} in one only")
            elif not _same_column(a.column(name), b.column(name)):
                out["differs"].append(f"{part}: {name}")
    out["same"] = out["same"] and not out["differs"]
    return out


def _close(a: Any, b: Any) -> bool:
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return x.shape == y.shape and bool(np.allclose(x, y, rtol=1e-6, atol=0, equal_nan=True))


def _same_specs(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """The same channels, statistics and operating regimes per class (statistics merged
    from parts differ from one pass in the last digits)."""
    if sorted(a) != sorted(b):
        return False
    for cls in a:
        x, y = a[cls], b[cls]
        if x["channels"] != y["channels"] or not all(_close(x[k], y[k]) for k in ("mean", "std")):
            return False
        rx, ry = x.get("regimes"), y.get("regimes")
        if (rx is None) != (ry is None):
            return False
        if rx is not None and not all(
            _close(rx[k], ry[k]) for k in ("center", "scale", "mean", "std")
        ):
            return False
    return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ingest", description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=180, help="days of hourly readings per pump")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray")
    parser.add_argument("--out", type=Path, default=None, help="result JSON")
    parser.add_argument("--keep", action="store_true", help="keep both runs' outputs")
    args = parser.parse_args(argv)

    root = Settings().home / "benchmarks"
    root.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    source, pumps = fleet_dataset(args.rows, args.days, args.seed, root)
    print(
        f"fleet: {pumps} pumps x {args.days} days hourly at {source} "
        f"({time.perf_counter() - t:.0f} s)"
    )
    work = Path(tempfile.mkdtemp(prefix="ingest-run-", dir=root))
    try:
        load = {"single": os.getloadavg()[0]}
        single = _run_single(source, work / "single")
        single["seconds"] = sum(single["stages"].values())
        load["ray"] = os.getloadavg()[0]
        ray_run = _run_ray(source, work / "features", WindowConfig(), args.cpus)
        published = open_snapshot(str(work / "features"), ray_run["snapshot_id"])
        check = compare(Path(published.data) / "windows", work / "single" / "windows")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    counted = (
        "rows_in",
        "rows_valid",
        "rows_quarantined",
        "quarantine_reasons",
        "pumps",
        "windows",
    )
    check["same_counts"] = all(single[k] == ray_run[k] for k in counted)
    check["same_specs"] = _same_specs(single["specs"], ray_run["specs"])

    rows = single["rows_in"]
    base = rows / single["seconds"]
    table = []
    for name, r, pss in (
        ("single process (pandas)", single, None),
        (f"Ray Data ({args.cpus} CPUs)", ray_run, ray_run["peak_pss"]),
    ):
        rate = rows / r["seconds"]
        store = r.get("peak_object_store")
        table.append(
            [
                name,
                f"{r['seconds']:.1f}",
                f"{rate:,.0f}",
                f"{rate / base:.2f}x",
                f"{r['peak_rss'] / GB:.2f}",
                "" if pss is None else f"{pss / GB:.2f}",
                "" if store is None else f"{store / GB:.2f}",
            ]
        )
    n_windows = sum(sum(s.values()) for s in ray_run["windows"].values())
    print(f"ingest: {rows:,} rows, {pumps} pumps, {n_windows:,} windows")
    print(
        format_table(
            [
                "implementation",
                "s",
                "rows/s",
                "x single",
                "peak RSS GB",
                "peak PSS GB",
                "object store GB",
            ],
            table,
        )
    )
    print(f"load average before: single {load['single']:.1f}, Ray {load['ray']:.1f}")
    print(f"stages, single: {single['stages']}")
    print(
        f"stages, Ray:    {ray_run['stages']} "
        f"(ray.init {ray_run['init_seconds']:.1f} s, not counted)"
    )
    same = check["same"] and check["same_counts"] and check["same_specs"]
    print(
        f"same windows: {'yes' if same else 'NO'} ({check['windows']:,} windows compared; counts "
        f"{'equal' if check['same_counts'] else 'differ'}; "
        f"specs {'equal' if check['same_specs'] else 'differ'})"
        + (f"; differs: {check['differs']}" if check["differs"] else "")
    )
    result = {
        "rows": rows,
        "pumps": pumps,
        "days": args.days,
        "cpus": args.cpus,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "single": single,
        "ray": ray_run,
        "ratio": (rows / ray_run["seconds"]) / base,
        "check": check,
        "load_average_before": load,
    }
    out = args.out or root / f"ingest-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2, default=str))
    print(f"result: {out}")


if __name__ == "__main__":
    main()
