"""Sliding windows and labels per pump: pure functions that Ray Data maps per group."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import BaseModel, Field, model_validator

from pumpfleet.features import max_span_ms
from pumpfleet.schema import CHANNEL_NAMES

MS_PER_HOUR = 3_600_000
# By pump: train, val and holdout. "future": the windows of train and val pumps that end
# after the time cutoff, a holdout in time (holdout pumps stay holdout throughout).
SPLITS = ("train", "val", "holdout", "future")


class WindowConfig(BaseModel):
    """How readings become labelled windows."""

    window: int = Field(default=24, ge=2, le=10_000)
    stride: int = Field(default=4, ge=1)
    # The readings' nominal interval; windows spanning gaps of more than half a window
    # are dropped. None: take it from the dataset's fleet schema.
    interval_seconds: float | None = Field(default=None, gt=0)
    rul_cap_hours: float = Field(default=168.0, gt=0)
    horizon_hours: float = Field(default=48.0, gt=0)
    # Share of each class's pumps held out for validation and for the final holdout.
    val_fraction: float = Field(default=0.15, gt=0, lt=0.5)
    holdout_fraction: float = Field(default=0.15, gt=0, lt=0.5)
    # Share of the fleet's time span, at its end, held out from training and validation
    # (split "future"); 0 turns the time holdout off.
    future_fraction: float = Field(default=0.1, ge=0, lt=0.5)
    # Normalise per operating regime (learned from the settings); False: per class only.
    regimes: bool = True

    @model_validator(mode="after")
    def _horizon_below_cap(self) -> WindowConfig:
        if self.horizon_hours >= self.rul_cap_hours:
            raise ValueError("horizon_hours must be below rul_cap_hours")
        return self


def window_schema(cfg: WindowConfig, n_channels: int = len(CHANNEL_NAMES)) -> pa.Schema:
    return pa.schema(
        [
            ("pump_id", pa.string()),
            ("pump_class", pa.string()),
            ("site", pa.string()),
            ("split", pa.string()),
            ("end_time", pa.timestamp("ms", tz="UTC")),
            ("rul_hours", pa.float32()),
            ("failure_within_horizon", pa.int8()),
            ("window", pa.list_(pa.float32(), cfg.window * n_channels)),
        ]
    )


def assign_splits(
    pumps_by_class: Mapping[str, Sequence[str]], val_fraction: float, holdout_fraction: float
) -> dict[str, str]:
    """Split each class's pumps into train / val / holdout, by pump (never across one
    pump's history), deterministically: pumps are ordered by a hash of their id.

    Every class with at least three pumps gets at least one pump in each split.
    """
    out: dict[str, str] = {}
    for pumps in pumps_by_class.values():
        ordered = sorted(pumps, key=lambda p: hashlib.sha256(p.encode()).hexdigest())
        n = len(ordered)
        n_hold = max(1, round(n * holdout_fraction)) if n >= 3 else 0
        n_val = max(1, round(n * val_fraction)) if n >= 3 else 0
        for i, p in enumerate(ordered):
            out[p] = "holdout" if i < n_hold else "val" if i < n_hold + n_val else "train"
    return out


def time_cutoff(t_min_ms: int, t_max_ms: int, cfg: WindowConfig) -> int | None:
    """The time after which train and val pumps' windows become "future"."""
    if cfg.future_fraction == 0 or t_max_ms <= t_min_ms:
        return None
    return int(t_max_ms - round((t_max_ms - t_min_ms) * cfg.future_fraction))


def make_windows(
    df: pd.DataFrame,
    failures: Mapping[str, Sequence[int]],
    splits: Mapping[str, str],
    cfg: WindowConfig,
    channels: Sequence[str] = CHANNEL_NAMES,
    cutoff_ms: int | None = None,
) -> pa.Table:
    """Labelled sliding windows of one pump's validated readings.

    ``failures`` maps pump id to failure times (ms since epoch). A window's RUL is the
    time from its last reading to the next failure, capped; where no failure follows
    within the record, the window is labelled with the cap if the record runs on for at
    least the cap, and dropped otherwise (its RUL is unknown). Windows that span a gap of
    more than half a window's worth of missing readings are dropped
    (:func:`pumpfleet.features.max_span_ms`, the rule the device cuts by too). A window holds
    ``channels`` in that order, flattened time-major. Windows of train and val pumps
    ending after ``cutoff_ms`` are split "future".
    """
    schema = window_schema(cfg, len(channels))
    if df.empty:
        return schema.empty_table()
    df = df.sort_values("timestamp", kind="stable")
    ts = pd.to_datetime(df["timestamp"], utc=True).dt.as_unit("ms").astype("int64").to_numpy()
    w = cfg.window
    if len(df) < w:
        return schema.empty_table()
    pump_id = str(df["pump_id"].iloc[0])
    values = df[list(channels)].to_numpy(dtype=np.float32, na_value=np.nan)
    ends = np.arange(w - 1, len(df), cfg.stride)
    span = ts[ends] - ts[ends - (w - 1)]
    ok = span <= max_span_ms(w, cfg.interval_seconds or 3600.0)
    end_ts = ts[ends]
    fail = np.sort(np.asarray(failures.get(pump_id, ()), dtype=np.int64))
    nxt = np.searchsorted(fail, end_ts, side="left")
    has_failure = nxt < len(fail)
    next_failure = fail[np.minimum(nxt, len(fail) - 1)] if len(fail) else end_ts
    to_failure = np.where(has_failure, next_failure - end_ts, 0)
    to_end = ts[-1] - end_ts
    cap_ms = cfg.rul_cap_hours * MS_PER_HOUR
    rul_ms = np.where(has_failure, np.minimum(to_failure, cap_ms), cap_ms)
    known = has_failure | (to_end >= cap_ms)
    keep = ok & known
    ends, end_ts, rul_ms = ends[keep], end_ts[keep], rul_ms[keep]
    rul_h = (rul_ms / MS_PER_HOUR).astype(np.float32)
    if len(ends) == 0:
        return schema.empty_table()
    windows = np.lib.stride_tricks.sliding_window_view(values, w, axis=0)  # [n-w+1, C, w]
    flat = np.ascontiguousarray(windows[ends - (w - 1)].transpose(0, 2, 1)).reshape(-1)
    n = len(ends)
    split = splits.get(pump_id, "train")
    if cutoff_ms is not None and split != "holdout":
        split_col = pa.array(np.where(end_ts > cutoff_ms, "future", split))
    else:
        split_col = pa.array([split] * n)
    return pa.Table.from_arrays(
        [
            pa.array([pump_id] * n),
            pa.array([str(df["pump_class"].iloc[0])] * n),
            pa.array([str(df["site"].iloc[0])] * n),
            split_col,
            pa.array(end_ts, type=pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
            pa.array(rul_h, type=pa.float32()),
            pa.array((rul_h <= cfg.horizon_hours).astype(np.int8), type=pa.int8()),
            pa.FixedSizeListArray.from_arrays(pa.array(flat, type=pa.float32()), w * len(channels)),
        ],
        schema=schema,
    )


def windows_to_numpy(table: pa.Table, window: int, n_channels: int) -> np.ndarray:
    """The ``window`` column of a windows table as ``[N, W, n_channels]``."""
    col = table.column("window").combine_chunks()
    flat = col.flatten().to_numpy(zero_copy_only=False)
    return flat.reshape(len(table), window, n_channels)
