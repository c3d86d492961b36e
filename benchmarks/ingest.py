"""Ingest, four arms on the same simulated fleet (hourly readings, every fault kind
injected) in one run, each in a fresh interpreter of its own (``benchmarks.ingest_arms``):

- ``reference``: the plain pandas implementation, one pump at a time
  (``benchmarks.ingest_single``: ``validate_pump`` and ``make_windows``), in memory;
- ``vectorised``: the array core in one process (``pumpfleet.ingest_stream``), end to
  end: plan and input digests, quarantine, per-file counts, atomic publication;
- ``ray``: Ray Data on a local Ray of ``--cpus`` CPUs (``ray_jobs.ingest``), the same
  array functions in ``map_batches`` over groups of files that hold whole pumps, no
  shuffle (``pumpfleet.ingest_tasks``);
- ``floor``: read the input into Arrow and write the same windows, no compute.

    python -m benchmarks.ingest [--rows 1000000] [--arms reference,vectorised,ray,floor]

Every arm's peak memory is sampled from outside (summed over the arm's process and every
process under it: RSS every 0.2 s, PSS every 0.5 s, and the kernel's own peak RSS of the
arm's main process); its CPU seconds are those of the same processes over the timed part.
Cores used = CPU seconds / wall seconds; rows/s per core = rows per CPU second (on a
machine shared with other jobs an arm gets a fraction of a core: its wall rows/s counts
that against it, its rows per CPU second does not).
The windows, labels, counts and quarantine reasons of every arm must equal the
reference's (the vectorised and Ray arms' per-file counts each other's). The load
average before each arm is recorded: on a shared machine it says how far to trust a
ratio. Ends with ``rows_per_core=<vectorised> ray_vs_single=<ray / vectorised rows/s>
peak_gb=<the largest arm's peak RSS>``.
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

from benchmarks.ingest_check import compare, different_counts, every_fault, same_specs
from pumpfleet.settings import Settings
from pumpfleet.simulator import SimulationConfig, simulate
from pumpfleet.tables import format_table

log = logging.getLogger(__name__)
GB = 1e9


def fleet_dataset(rows: int, days: int, seed: int, root: Path) -> tuple[Path, int]:
    """A simulated fleet of at least ``rows`` hourly readings with every fault kind
    injected (reused when present)."""
    pumps = -(-rows // (days * 24))
    path = root / f"fleet-{pumps}p-{days}d-s{seed}-faults"
    if not (path / "fleet.json").exists():  # written last: its presence means complete
        cfg = SimulationConfig(pumps=pumps, days=days, seed=seed, faults=every_fault(days))
        simulate(cfg, str(path), overwrite=True)
    return path, pumps


class MemorySampler:
    """Peaks of the summed RSS (every ``interval`` s) and PSS (every ``full_every`` s) of
    a process and its descendants, and, where this process runs Ray and ``object_store``
    is set, of the object store's use (Ray's internal API, every ``full_every`` s)."""

    def __init__(
        self, pid: int, interval: float = 0.2, object_store: bool = False, full_every: float = 2.0
    ) -> None:
        # PSS (reading /proc/*/smaps_rollup: 60 ms for 10 processes) and the object store
        # every 2 s, so that sampling costs the run under 5% of a core.
        import ray  # noqa: F401, I001  (psutil comes with Ray, in its thirdparty_files)
        import psutil

        self.psutil = psutil
        self.root = psutil.Process(pid)
        self.interval = interval
        self.full_every = full_every
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
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except self.psutil.NoSuchProcess:  # the arm, or a process under it, just exited
            return
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
            full = time.monotonic() - last_full >= self.full_every
            if full:
                last_full = time.monotonic()
                if self.object_store:
                    self._store()
            self._sample(full)
            self._stop.wait(self.interval)
        self._sample(full=True)


ARMS = ("reference", "vectorised", "ray", "floor")


def run_arm(arm: str, source: Path, out: Path, cpus: int, windows: Path | None) -> dict[str, Any]:
    """One arm in a fresh interpreter (``benchmarks.ingest_arms``), its memory sampled
    from here; the load average before it is recorded."""
    cmd = [sys.executable, "-m", "benchmarks.ingest_arms", arm, str(source), str(out)]
    cmd += ["--cpus", str(cpus)] + (["--windows", str(windows)] if windows else [])
    load = os.getloadavg()[0]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with MemorySampler(proc.pid, full_every=0.5) as mem:
        stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"arm {arm} failed ({proc.returncode}): {stderr[-2000:]}")
    result: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    result |= {"load_before": load, "peak_pss": mem.peak_pss, "processes": mem.processes}
    result["peak_rss"] = max(mem.peak_rss, result["max_rss"])
    return result


def check(runs: dict[str, dict[str, Any]], windows: dict[str, Path]) -> dict[str, Any]:
    """Every arm's windows, labels and counts against the reference's (or, without a
    reference, the vectorised arm's): what differs, per arm."""
    base = "reference" if "reference" in runs else "vectorised"
    out: dict[str, Any] = {"against": base, "windows": 0, "differs": {}}
    for arm in ("vectorised", "ray"):
        if arm == base or arm not in runs:
            continue
        found = compare(windows[arm], windows[base])
        out["windows"] = found["windows"]
        differs = [*found["differs"], *different_counts(runs[base], runs[arm])]
        if not found["same"] and not found["differs"]:
            differs.append("class partitions")
        if not same_specs(runs[base]["specs"], runs[arm]["specs"]):
            differs.append("specs")
        out["differs"][arm] = differs
    out["checked"] = bool(out["differs"])  # one arm with windows: nothing to compare
    out["same"] = not any(out["differs"].values())
    return out


def _row(name: str, r: dict[str, Any], rows: int, base: dict[str, float]) -> list[str]:
    rate = rows / r["seconds"]
    cores = r["cpu_seconds"] / r["seconds"]
    return [
        name,
        f"{r['seconds']:.1f}",
        f"{rate:,.0f}",
        f"{cores:.2f}",
        f"{per_core(r, rows):,.0f}",
        f"{1e6 * r['cpu_seconds'] / rows:.2f}",
        *(f"{rate / b:.2f}x" if b else "" for b in base.values()),
        f"{r['peak_rss'] / GB:.2f}",
        f"{r['peak_pss'] / GB:.2f}",
        f"{r['load_before']:.1f}",
    ]


def per_core(r: dict[str, Any], rows: int) -> float:
    """Rows per CPU second: rows/s per core the arm kept busy (on a machine shared with
    other jobs an arm gets a fraction of a core, which its wall rows/s counts against it)."""
    return rows / r["cpu_seconds"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ingest", description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=180, help="days of hourly readings per pump")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray")
    parser.add_argument("--arms", default=",".join(ARMS), help="a comma-separated subset")
    parser.add_argument("--out", type=Path, default=None, help="result JSON")
    parser.add_argument("--keep", action="store_true", help="keep the arms' outputs")
    args = parser.parse_args(argv)
    arms = [a for a in ARMS if a in args.arms.split(",")]
    if "vectorised" not in arms:
        parser.error("--arms must include vectorised (the floor writes its windows)")

    root = Settings().home / "benchmarks"
    root.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    source, pumps = fleet_dataset(args.rows, args.days, args.seed, root)
    print(
        f"fleet: {pumps} pumps x {args.days} days hourly, every fault kind, at {source} "
        f"({time.perf_counter() - t:.0f} s)"
    )
    work = Path(tempfile.mkdtemp(prefix="ingest-run-", dir=root))
    runs: dict[str, dict[str, Any]] = {}
    windows: dict[str, Path] = {}
    try:
        for arm in arms:
            out = work / arm
            runs[arm] = run_arm(arm, source, out, args.cpus, windows.get("vectorised"))
            if arm == "reference":
                windows[arm] = out / "windows"
            elif arm in ("vectorised", "ray"):
                windows[arm] = Path(runs[arm]["data"]) / "windows"
        found = check(runs, windows)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    rows = runs["vectorised"]["rows_in"]
    vec = runs["vectorised"]
    base: dict[str, float] = {
        a: rows / runs[a]["seconds"] for a in ("reference", "vectorised") if a in runs
    }
    names = {
        "reference": "reference (pandas, per pump)",
        "vectorised": "vectorised, 1 process",
        "ray": f"Ray Data ({args.cpus} CPUs)",
        "floor": "I/O floor (read + write)",
    }
    table = [_row(names[a], runs[a], rows, base) for a in arms]
    n_windows = sum(sum(s.values()) for s in vec["windows"].values())
    print(
        f"ingest: {rows:,} rows, {pumps} pumps, {vec['rows_quarantined']:,} quarantined "
        f"({len(vec['quarantine_reasons'])} reasons), {n_windows:,} windows"
    )
    header = ["arm", "s", "rows/s", "cores", "rows/s/core", "CPU us/row"]
    header += [f"x {a}" for a in base] + ["peak RSS GB", "peak PSS GB", "load before"]
    print(format_table(header, table))
    for a in arms:
        extra = f" (ray.init {runs[a]['init_seconds']:.1f} s, not counted)" if a == "ray" else ""
        print(f"stages, {a}: {runs[a]['stages']}{extra}")
    differs = {a: d for a, d in found["differs"].items() if d}
    if found["checked"]:
        print(
            f"same windows, labels, counts and quarantine reasons as {found['against']}: "
            f"{'yes' if found['same'] else 'NO'} ({found['windows']:,} windows compared"
            + (f"; differs: {differs})" if differs else ")")
        )
    else:
        print("equality not checked: one arm with windows (add reference or ray to --arms)")
    result = {
        "rows": rows,
        "pumps": pumps,
        "days": args.days,
        "cpus": args.cpus,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "runs": {a: {k: v for k, v in r.items() if k != "specs"} for a, r in runs.items()},
        "check": found,
    }
    out = args.out or root / f"ingest-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2, default=str))
    print(f"result: {out}")
    ray_vs = rows / runs["ray"]["seconds"] / base["vectorised"] if "ray" in runs else float("nan")
    peak = max(r["peak_rss"] for r in runs.values()) / GB
    print(f"rows_per_core={per_core(vec, rows):.0f} ray_vs_single={ray_vs:.2f} peak_gb={peak:.2f}")
    if not found["same"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
