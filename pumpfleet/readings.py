"""One validation of readings for every door: the HTTP single, JSON batch and Arrow batch
routes, feedback, edge uploads, the device's spool and stdin. The same rules ingest
applies to a row (a channel's physical range, per class, from the fleet schema; a reading
must be a finite number), the same pump-id rule everywhere, and a window must hold enough
readings to say anything (an all-missing window is no window).

numpy only (and the feature spec): the device imports it.
"""

from __future__ import annotations

import re

import numpy as np

from pumpfleet.errors import InputError
from pumpfleet.features import FeatureSpec

# A window needs at least this share of its channel readings present; below it the
# model would score the training means, not the pump.
MIN_PRESENT = 0.5
PUMP_ID_MAX = 128
# Printable, no control characters, no leading or trailing blank.
_PUMP_ID = re.compile(r"^[^\x00-\x1f\x7f\s](?:[^\x00-\x1f\x7f]{0,126}[^\x00-\x1f\x7f\s])?$")


def check_pump_id(value: object, field: str = "pump_id") -> str:
    """``value`` if it is a pump id (1-128 printable characters); else InputError."""
    if not isinstance(value, str) or not _PUMP_ID.match(value):
        shown = repr(value) if len(repr(value)) < 60 else repr(value)[:57] + "..."
        raise InputError(f"{field}: 1 to {PUMP_ID_MAX} printable characters, got {shown}")
    return value


def ranges(spec: FeatureSpec) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper physical bounds of the spec's channels (±inf where none is known)."""
    lo = np.full(spec.n_channels, -np.inf)
    hi = np.full(spec.n_channels, np.inf)
    for i, c in enumerate(spec.channels):
        found = spec.physical_range(c)
        if found is not None:
            lo[i], hi[i] = found
    return lo, hi


def window_problems(raw: np.ndarray, spec: FeatureSpec) -> list[str | None]:
    """Why each raw window ``[N, W, C + S]`` may not be scored (None: it may), naming
    the channel or setting: a value that is not finite, a reading outside its channel's
    physical range, or fewer than MIN_PRESENT of the channel readings present."""
    raw = np.asarray(raw, dtype=np.float64)
    n, c = raw.shape[0], spec.n_channels
    out: list[str | None] = [None] * n
    inf = np.isinf(raw)
    if inf.any():
        for i, j in zip(*np.nonzero(inf.any(axis=1)), strict=True):
            if out[i] is None:
                out[i] = f"readings.{spec.inputs[j]}: inf is not a reading"
    lo, hi = ranges(spec)
    x = raw[..., :c]
    with np.errstate(invalid="ignore"):
        outside = (x < lo) | (x > hi)  # NaN compares False: missing is not out of range
    if outside.any():
        for i, j in zip(*np.nonzero(outside.any(axis=1)), strict=True):
            if out[i] is None:
                bad = x[i, :, j][outside[i, :, j]][0]
                out[i] = (
                    f"readings.{spec.channels[j]}: {bad:g} is outside its physical range "
                    f"{lo[j]:g} to {hi[j]:g}"
                )
    present = np.isfinite(x).mean(axis=(1, 2)) if c else np.ones(n)
    for i in np.flatnonzero(present < MIN_PRESENT):
        if out[i] is None:
            out[i] = (
                f"readings: {present[i]:.0%} of the window's channel readings are present, "
                f"at least {MIN_PRESENT:.0%} needed"
            )
    return out


def check_window(raw: np.ndarray, spec: FeatureSpec) -> None:
    """InputError naming the field if the raw window ``[W, C + S]`` may not be scored."""
    problem = window_problems(np.asarray(raw)[None], spec)[0]
    if problem is not None:
        raise InputError(problem)


def reading_problem(values: dict[str, float | None], spec: FeatureSpec) -> str | None:
    """Why one reading (channel or setting → value, None: missing) may not be used by a
    model of ``spec``; None if it may."""
    for name, v in values.items():
        if v is None:
            continue
        if not np.isfinite(v):
            return f"{name}: {v} is not a reading"
        found = spec.physical_range(name) if name in spec.channels else None
        if found is not None and not found[0] <= v <= found[1]:
            return f"{name}: {v:g} is outside its physical range {found[0]:g} to {found[1]:g}"
    return None
