"""Row validation, as pure functions over pandas frames that Ray Data maps.

Invalid rows are never dropped silently: they are kept with a reason code, and the
ingest job writes them to a quarantine table so that the counts reconcile exactly.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pumpfleet.schema import KEY_COLUMNS, FleetSchema, pump_fleet_schema

REASON = "quarantine_reason"


def validate_pump(df: pd.DataFrame, fleet: FleetSchema | None = None) -> pd.DataFrame:
    """Check one pump's rows; return them sorted by time with a ``quarantine_reason``
    column that is null for good rows and says why for the others.

    Reasons: ``missing:<column>``, ``unknown_class``, ``out_of_range:<channel>``,
    ``no_readings``, ``duplicate_timestamp`` (the first row at a timestamp is kept), and,
    where the fleet schema asks for them, ``stuck:<channel>`` (the repeats of a stuck
    reading) and ``spike:<channel>``. A single missing channel value is not a reason:
    the row is kept and the feature path fills the value in.
    """
    fleet = fleet or pump_fleet_schema()
    df = df.sort_values("timestamp", kind="stable").reset_index(drop=True)
    reason = pd.Series([None] * len(df), dtype=object)

    def mark(mask: np.ndarray | pd.Series, why: str) -> None:
        m = np.asarray(mask, dtype=bool) & reason.isna().to_numpy()
        reason[m] = why

    for col in KEY_COLUMNS:
        mark(df[col].isna(), f"missing:{col}")
    classes = df["pump_class"].astype(str)
    known = classes.isin(list(fleet.classes))
    mark(~known, "unknown_class")
    for ch, spec in fleet.channels.items():
        v = df[ch].astype(float)
        mark(v.notna() & ((v < spec.min) | (v > spec.max)), f"out_of_range:{ch}")
    fitted = np.zeros(len(df), dtype=bool)
    for cls, chans in fleet.classes.items():
        of_class = (classes == cls).to_numpy()
        if of_class.any() and chans:
            fitted |= of_class & df[list(chans)].notna().any(axis=1).to_numpy()
    mark(known & ~fitted, "no_readings")
    good = reason.isna()
    dup = df["timestamp"].duplicated(keep="first") & good
    # A later copy of a good row is the duplicate; keep the first one we saw.
    mark(dup, "duplicate_timestamp")
    for ch, spec in fleet.channels.items():
        if spec.stuck_after is None and spec.spike_ratio is None:
            continue
        rows = np.flatnonzero(reason.isna().to_numpy())
        values = df[ch].to_numpy(dtype=float, na_value=np.nan)[rows]
        if spec.stuck_after is not None:
            hit = np.zeros(len(df), dtype=bool)
            hit[rows[stuck(values, spec.stuck_after)]] = True
            mark(hit, f"stuck:{ch}")
        if spec.spike_ratio is not None:
            hit = np.zeros(len(df), dtype=bool)
            hit[rows[spikes(values, spec.spike_ratio)]] = True
            mark(hit, f"spike:{ch}")
    out = df.copy()
    out[REASON] = reason.to_numpy()
    return out


def stuck(values: np.ndarray, after: int) -> np.ndarray:
    """The repeats in runs of at least ``after`` identical readings (the first of a run
    is the last good reading). NaN breaks a run."""
    if len(values) == 0:
        return np.zeros(0, dtype=bool)
    same = np.r_[False, values[1:] == values[:-1]]
    run = np.cumsum(~same)
    return np.asarray(same & (np.bincount(run)[run] >= after))


def spikes(values: np.ndarray, ratio: float) -> np.ndarray:
    """Readings further than ``ratio`` x the median of the five around them from that
    median: an isolated excursion, not a step (a step moves the median with it)."""
    med = pd.Series(values).rolling(5, center=True, min_periods=3).median().to_numpy()
    with np.errstate(invalid="ignore"):
        return np.asarray(np.abs(values - med) > ratio * np.abs(med))
