"""The one feature code path: training, the Serve replicas and the edge agent turn a raw
window of readings into model input with these functions and the same spec.

numpy only, so the edge agent can import it without pandas, torch or Ray.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, Field, model_validator

from pumpfleet.errors import InputError
from pumpfleet.schema import CHANNEL_NAMES, CHANNELS

# Normalised inputs are clipped so that one wild sensor cannot swamp the model.
CLIP = 10.0
# A window may span this many times its nominal length ((window - 1) intervals): readings
# that came late or went missing, up to half a window's worth, and no more.
MAX_SPAN_FACTOR = 1.5


def max_span_ms(window: int, interval_seconds: float) -> float:
    """The one window-cutting rule, for training and the device alike: a window whose
    first and last readings lie further apart than this (milliseconds) spans a gap, and
    is never formed (training drops it; the device never scores it)."""
    return (window - 1) * interval_seconds * 1000.0 * MAX_SPAN_FACTOR


class Regimes(BaseModel):
    """Operating regimes of one pump class: clusters of its operating settings, learned on
    the training pumps (:func:`pumpfleet.regimes.fit_regimes`), and the statistics of
    each channel within each regime. A reading is normalised with its own regime's
    statistics, so that the model sees degradation rather than setpoint changes."""

    settings: list[str] = Field(min_length=1)
    # Cluster centres in the settings' own units, one row per regime, and the scale of
    # each setting that distances are measured in.
    center: list[list[float]] = Field(min_length=2)
    scale: list[float]
    # Per regime (row) and channel (column): mean and standard deviation, and the
    # training rows each regime had.
    mean: list[list[float]]
    std: list[list[float]]
    rows: list[int]

    @model_validator(mode="after")
    def _consistent(self) -> Regimes:
        k, n_settings = len(self.center), len(self.settings)
        if any(len(c) != n_settings for c in self.center) or len(self.scale) != n_settings:
            raise ValueError("every regime centre and the scale need one value per setting")
        if any(s <= 0 for s in self.scale):
            raise ValueError("every setting scale must be positive")
        if not (len(self.mean) == len(self.std) == len(self.rows) == k):
            raise ValueError("mean, std and rows need one row per regime")
        if len({len(m) for m in self.mean} | {len(s) for s in self.std}) != 1:
            raise ValueError("every regime needs one mean and std per channel")
        if any(v <= 0 for row in self.std for v in row):
            raise ValueError("every regime std must be positive")
        return self

    @property
    def k(self) -> int:
        return len(self.center)

    def assign(self, settings: np.ndarray) -> np.ndarray:
        """The regime of each reading from its settings ``[..., S]``: the nearest centre
        in scaled units; -1 where a setting is missing."""
        return nearest_regime(settings, np.asarray(self.center), np.asarray(self.scale))


def nearest_regime(settings: np.ndarray, center: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Index of the nearest centre ``[k, S]`` to each settings row ``[..., S]`` in units
    of ``scale``; -1 where a setting is missing."""
    s = np.asarray(settings, dtype=np.float64)
    z = s / scale
    c = center / scale
    d = ((z[..., None, :] - c) ** 2).sum(axis=-1)  # [..., k]
    out = np.argmin(np.nan_to_num(d, nan=np.inf), axis=-1)
    return np.where(np.isnan(s).any(axis=-1), -1, out)


class FeatureSpec(BaseModel):
    """Everything needed to compute a model's input from raw readings: which channels,
    the window, the normalisation statistics, and how to read the model's outputs."""

    pump_class: str
    channels: list[str] = Field(min_length=1)
    window: int = Field(ge=2)
    stride: int = Field(ge=1)
    interval_seconds: float = Field(gt=0)
    rul_cap_hours: float = Field(gt=0)
    horizon_hours: float = Field(gt=0)
    alert_threshold: float = Field(default=0.5, gt=0, lt=1)
    # Statistics over all training readings: used where a class has one regime, and for
    # readings whose settings are missing.
    mean: list[float]
    std: list[float]
    regimes: Regimes | None = None
    # The dataset's operating settings: a request may carry them whether or not this
    # class has regimes (its other arm, or the next model, may need them).
    setting_names: list[str] = Field(default_factory=list)
    # Each channel's physical range [min, max] from the fleet schema, outside which a
    # reading is a sensor fault (ingest quarantines it; the scoring doors refuse it).
    # Specs written before it had none: the pump fleet's own ranges apply there.
    ranges: dict[str, tuple[float, float]] = Field(default_factory=dict)
    version: int = 1

    @model_validator(mode="after")
    def _consistent(self) -> FeatureSpec:
        if len(set(self.inputs)) != len(self.inputs):
            raise ValueError("channels and settings must be unique")
        if not (len(self.channels) == len(self.mean) == len(self.std)):
            raise ValueError("channels, mean and std must have the same length")
        if any(s <= 0 for s in self.std):
            raise ValueError("every std must be positive")
        if self.regimes is not None and len(self.regimes.mean[0]) != len(self.channels):
            raise ValueError("regime statistics need one value per channel")
        return self

    @property
    def n_channels(self) -> int:
        """Channels the model sees."""
        return len(self.channels)

    @property
    def settings(self) -> list[str]:
        """Operating settings a raw window carries after its channels (to find regimes)."""
        return list(self.regimes.settings) if self.regimes is not None else []

    @property
    def accepted(self) -> set[str]:
        """Names a request's readings may carry."""
        return {*self.channels, *self.settings, *self.setting_names}

    def physical_range(self, channel: str) -> tuple[float, float] | None:
        """The channel's physical range: the spec's, else the pump fleet's (None: none)."""
        if channel in self.ranges:
            return self.ranges[channel]
        found = CHANNELS.get(channel)
        return (found[1], found[2]) if found else None

    @property
    def inputs(self) -> list[str]:
        """What a raw window holds per step, in order: the channels, then the settings."""
        return [*self.channels, *self.settings]

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    @classmethod
    def from_json(cls, text: str | bytes) -> FeatureSpec:
        return cls.model_validate(json.loads(text))


def select_channels(
    raw_all: np.ndarray, spec: FeatureSpec, layout: Sequence[str] = CHANNEL_NAMES
) -> np.ndarray:
    """From windows holding every column of ``layout`` ``[..., W, len(layout)]``, the
    spec's inputs (its channels, then its settings) in the spec's order."""
    missing = [c for c in spec.inputs if c not in layout]
    if missing:
        raise InputError(f"the windows hold no channel {missing[0]!r}")
    idx = [list(layout).index(c) for c in spec.inputs]
    return raw_all[..., idx]


def window_features(raw: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    """Model input ``[..., W, C]`` from raw windows ``[..., W, C + S]``: the spec's
    channels, then its settings (none where the class has one regime).

    Each channel is standardised with the training statistics of the reading's operating
    regime (or of all training readings, where the class has one regime or the reading's
    settings are missing); a missing reading (NaN) becomes that mean, i.e. 0.
    """
    raw = np.asarray(raw, dtype=np.float64)
    n_in = len(spec.inputs)
    if raw.shape[-2:] != (spec.window, n_in):
        what = f"{spec.n_channels} channels" + (
            f" + {len(spec.settings)} settings" if spec.settings else ""
        )
        raise InputError(
            f"window must be {spec.window} steps x {what}, got {raw.shape[-2]} x {raw.shape[-1]}"
        )
    x = raw[..., : spec.n_channels]
    if spec.regimes is None:
        z = (x - np.asarray(spec.mean)) / np.asarray(spec.std)
    else:
        regime = spec.regimes.assign(raw[..., spec.n_channels :])  # [..., W], -1: unknown
        # Row -1 of these tables is the all-readings statistics, for unknown regimes.
        mean = np.vstack([spec.regimes.mean, spec.mean])
        std = np.vstack([spec.regimes.std, spec.std])
        z = (x - mean[regime]) / std[regime]
    # ±inf clipped to ±CLIP, NaN to 0: nan_to_num's answer, with its isposinf and
    # isneginf passes left out (1.3 ms of a 500-window batch's 6 ms in a replica)
    z = np.clip(z, -CLIP, CLIP)
    np.copyto(z, 0.0, where=np.isnan(z))
    return z.astype(np.float32)


def readings_to_window(readings: dict[str, list[float | None]], spec: FeatureSpec) -> np.ndarray:
    """A raw window ``[W, C + S]`` from ``{channel or setting: [values, oldest first]}``
    (None = missing)."""
    missing = [c for c in spec.inputs if c not in readings]
    if missing:
        what = "setting" if missing[0] in spec.settings else "channel"
        raise InputError(
            f"readings.{missing[0]}: {what} required for class {spec.pump_class}"
            + (" (it selects the operating regime)" if what == "setting" else "")
        )
    cols = []
    for c in spec.inputs:
        values = readings[c]
        if len(values) != spec.window:
            raise InputError(f"readings.{c}: expected {spec.window} values, got {len(values)}")
        cols.append([np.nan if v is None else float(v) for v in values])
    return np.asarray(cols, dtype=np.float64).T


def decode_outputs(out: np.ndarray, spec: FeatureSpec) -> tuple[np.ndarray, np.ndarray]:
    """Model output ``[B, 2]`` (RUL as a fraction of the cap, failure probability) to
    (RUL in hours, probability of failure within the horizon)."""
    out = np.asarray(out, dtype=np.float64)
    rul = np.clip(out[:, 0], 0.0, 1.0) * spec.rul_cap_hours
    prob = np.clip(out[:, 1], 0.0, 1.0)
    return rul, prob


def window_summary(raw: np.ndarray, spec: FeatureSpec) -> dict[str, np.ndarray]:
    """Per-window summary of raw inputs (mean of each channel) that the prediction log
    keeps and the drift monitor compares with the training reference."""
    raw = np.asarray(raw, dtype=np.float64)[..., : spec.n_channels]
    if not np.isnan(raw).any():  # nanmean's answer, a third of its time (no NaN copy)
        means = raw.mean(axis=-2)
    else:
        with np.errstate(invalid="ignore"), _quiet_nanmean():
            means = np.nanmean(raw, axis=-2)
    return {c: means[..., i] for i, c in enumerate(spec.channels)}


class _quiet_nanmean:
    """All-NaN windows give NaN, which is what the log should say; hide numpy's warning."""

    def __enter__(self) -> None:
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", category=RuntimeWarning)

    def __exit__(self, *exc: Any) -> None:
        self._ctx.__exit__(*exc)
