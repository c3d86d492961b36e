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
from pumpfleet.schema import CHANNEL_NAMES

# Normalised inputs are clipped so that one wild sensor cannot swamp the model.
CLIP = 10.0


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
    mean: list[float]
    std: list[float]
    version: int = 1

    @model_validator(mode="after")
    def _consistent(self) -> FeatureSpec:
        if len(set(self.channels)) != len(self.channels):
            raise ValueError("channels must be unique")
        if not (len(self.channels) == len(self.mean) == len(self.std)):
            raise ValueError("channels, mean and std must have the same length")
        if any(s <= 0 for s in self.std):
            raise ValueError("every std must be positive")
        return self

    @property
    def n_channels(self) -> int:
        return len(self.channels)

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    @classmethod
    def from_json(cls, text: str | bytes) -> FeatureSpec:
        return cls.model_validate(json.loads(text))


def select_channels(
    raw_all: np.ndarray, spec: FeatureSpec, layout: Sequence[str] = CHANNEL_NAMES
) -> np.ndarray:
    """From windows holding every channel of ``layout`` ``[..., W, len(layout)]``, the
    spec's channels in the spec's order."""
    missing = [c for c in spec.channels if c not in layout]
    if missing:
        raise InputError(f"the windows hold no channel {missing[0]!r}")
    idx = [list(layout).index(c) for c in spec.channels]
    return raw_all[..., idx]


def window_features(raw: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    """Model input from raw readings ``[..., W, C]`` (C = the spec's channels).

    Each channel is standardised with the training statistics; a missing reading (NaN)
    becomes the training mean, i.e. 0 after standardising.
    """
    raw = np.asarray(raw, dtype=np.float64)
    if raw.shape[-2:] != (spec.window, spec.n_channels):
        raise InputError(
            f"window must be {spec.window} steps x {spec.n_channels} channels, "
            f"got {raw.shape[-2]} x {raw.shape[-1]}"
        )
    z = (raw - np.asarray(spec.mean)) / np.asarray(spec.std)
    z = np.nan_to_num(z, nan=0.0, posinf=CLIP, neginf=-CLIP)
    return np.clip(z, -CLIP, CLIP).astype(np.float32)


def readings_to_window(readings: dict[str, list[float | None]], spec: FeatureSpec) -> np.ndarray:
    """A raw window ``[W, C]`` from ``{channel: [values, oldest first]}`` (None = missing)."""
    missing = [c for c in spec.channels if c not in readings]
    if missing:
        raise InputError(f"readings.{missing[0]}: channel required for class {spec.pump_class}")
    cols = []
    for c in spec.channels:
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
    raw = np.asarray(raw, dtype=np.float64)
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
