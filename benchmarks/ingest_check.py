"""What ``benchmarks.ingest`` checks between its arms, and the faults its input carries:
every fault kind the simulator injects (``pumpfleet.faults``), so that the equality of
windows, labels, counts and quarantine reasons is proven where validation has work."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pumpfleet.faults import FaultKind, FaultSpec
from pumpfleet.simulator import SimulationConfig, simulate

FAULT_KINDS: tuple[FaultKind, ...] = (
    "dropout",
    "stuck",
    "spike",
    "unit_error",
    "duplicate",
    "out_of_order",
    "clock_skew",
)
# What the arms must agree on exactly (the summary's keys); per_file where both give it.
COUNTED = ("rows_in", "rows_valid", "rows_quarantined", "quarantine_reasons", "pumps", "windows")


def every_fault(days: int) -> list[FaultSpec]:
    """Each fault kind on 30% of the pumps, for a day and a half, their spans spread over
    the record (``days`` long)."""
    step = max(days - 2, 1) / len(FAULT_KINDS)
    return [
        FaultSpec(kind=k, pumps=0.3, start_day=round(i * step, 2), duration_days=1.5, rate=0.1)
        for i, k in enumerate(FAULT_KINDS)
    ]


def faulted_fleet(path: Path, pumps: int, days: int, seed: int, batch_rows: int) -> Path:
    """A fleet simulated at ``path`` with every fault kind injected (:func:`every_fault`),
    ``batch_rows`` readings a file (a few pumps each where that is small); raises if a
    kind changed no row, for then validation had nothing of that kind to find."""
    cfg = SimulationConfig(
        pumps=pumps, days=days, seed=seed, faults=every_fault(days), batch_rows=batch_rows
    )
    counts = simulate(cfg, str(path))
    missing = [k for k in FAULT_KINDS if counts[f"fault_{k}"] <= 0]
    if missing:
        raise ValueError(f"no rows with fault {', '.join(missing)} in {pumps} pumps x {days} days")
    return path


def same_column(a: pa.ChunkedArray, b: pa.ChunkedArray) -> bool:
    """Equal values, NaN equal to NaN (the channels a class lacks are NaN in its windows)."""
    if a.type != b.type:
        return False
    if pa.types.is_fixed_size_list(a.type):
        a, b = a.combine_chunks().flatten(), b.combine_chunks().flatten()
    if pa.types.is_floating(a.type):
        x, y = a.to_numpy(zero_copy_only=False), b.to_numpy(zero_copy_only=False)
        return bool(np.array_equal(x, y, equal_nan=True))
    return bool(a.equals(b))


ORDER = [("pump_id", "ascending"), ("end_time", "ascending")]


def differing_columns(a: pa.Table, b: pa.Table) -> list[str]:
    """The columns in which two windows tables differ, once sorted by pump and end time
    (every column: keys, split, time, labels and the window's values)."""
    if a.num_rows != b.num_rows:
        return [f"rows: {a.num_rows} != {b.num_rows}"]
    a, b = a.sort_by(ORDER), b.sort_by(ORDER)
    out = []
    for name in sorted(set(a.column_names) | set(b.column_names)):
        if name not in a.column_names or name not in b.column_names:
            out.append(f"column {name} in one only")
        elif not same_column(a.column(name), b.column(name)):
            out.append(name)
    return out


def compare(windows_a: Path, windows_b: Path) -> dict[str, Any]:
    """Whether two ``windows/`` folders hold the same windows: the same class
    partitions and, in each, the same rows, arrays and labels included."""
    parts = sorted(p.name for p in windows_a.iterdir() if p.is_dir())
    other = sorted(p.name for p in windows_b.iterdir() if p.is_dir())
    out: dict[str, Any] = {"same": parts == other, "windows": 0, "differs": []}
    for part in parts if out["same"] else []:
        a, b = pq.read_table(windows_a / part), pq.read_table(windows_b / part)
        out["windows"] += a.num_rows
        out["differs"] += [f"{part}: {d}" for d in differing_columns(a, b)]
    out["same"] = out["same"] and not out["differs"]
    return out


def _close(a: Any, b: Any) -> bool:
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return x.shape == y.shape and bool(np.allclose(x, y, rtol=1e-6, atol=0, equal_nan=True))


def same_specs(a: dict[str, Any], b: dict[str, Any]) -> bool:
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


def different_counts(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The summary keys of :data:`COUNTED` (and ``per_file`` where both have it) in
    which two arms differ."""
    keys = [*COUNTED, *(["per_file"] if "per_file" in a and "per_file" in b else [])]
    return [k for k in keys if a.get(k) != b.get(k)]
