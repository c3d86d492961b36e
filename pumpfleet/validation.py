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
    ``no_readings``, ``duplicate_timestamp`` (the first row at a timestamp is kept).
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
    out = df.copy()
    out[REASON] = reason.to_numpy()
    return out
