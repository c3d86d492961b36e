"""Each pump class's feature spec, from the per-pump parts of an ingest
(``pumpfleet.ingest_parts``): the training pumps' statistics merged exactly per class
(and per operating regime, where a class's settings form clear clusters), and the spec
that training, serving, export and the device all compute features with.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from pumpfleet.features import FeatureSpec
from pumpfleet.regimes import RegimeFit, class_regimes, fit_regimes, merge_statistics
from pumpfleet.schema import FleetSchema
from pumpfleet.windows import WindowConfig


def class_statistics(
    stats: pd.DataFrame, splits: Mapping[str, str], channels: Iterable[str]
) -> pd.DataFrame:
    """Mean and standard deviation (ddof 1) per class and channel over the good rows of
    the training pumps, merged from the pumps' parts (Chan et al.)."""
    train = stats[stats["pump_id"].map(splits).fillna("train") == "train"]
    out: dict[str, list[object]] = {"pump_class": []}
    for cls, part in train.groupby("pump_class", sort=True):
        out["pump_class"].append(cls)
        for c in channels:
            n_i = part[f"n:{c}"].to_numpy(dtype=float)
            mean_i = np.nan_to_num(part[f"mean:{c}"].to_numpy(dtype=float))
            m2_i = np.nan_to_num(part[f"m2:{c}"].to_numpy(dtype=float))
            n = n_i.sum()
            mean = float((n_i * mean_i).sum() / n) if n else float("nan")
            m2 = float(m2_i.sum() + (n_i * (mean_i - mean) ** 2).sum()) if n else float("nan")
            std = float(np.sqrt(m2 / (n - 1))) if n > 1 else float("nan")
            out.setdefault(f"mean({c})", []).append(mean)
            out.setdefault(f"std({c})", []).append(std)
    return pd.DataFrame(out)


def _train_rows(df: pd.DataFrame, splits: Mapping[str, str]) -> pd.DataFrame:
    return df[df["pump_id"].map(splits).fillna("train") == "train"]


def fit_class_regimes(
    samples: pd.DataFrame, splits: Mapping[str, str], settings: Sequence[str]
) -> dict[str, RegimeFit]:
    """Per class, the regimes of the training pumps' settings samples (classes whose
    settings form no clear clusters are left out). Pumps in id order, so the fit does not
    depend on the order in which the parts arrived."""
    out: dict[str, RegimeFit] = {}
    if not settings or samples.empty:
        return out
    train = _train_rows(samples, splits).sort_values("pump_id", kind="stable")
    for cls, part in train.groupby("pump_class", sort=True):
        fit = fit_regimes(part[list(settings)].to_numpy(dtype=np.float64))
        if fit is not None:
            out[str(cls)] = fit
    return out


def class_regime_statistics(
    stats: pd.DataFrame, splits: Mapping[str, str], channels: Sequence[str]
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per class: count, mean and std ``[k, C]`` per regime and channel over the training
    pumps' good rows, merged from the pumps' :func:`pump_regime_statistics`."""
    out: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    if stats.empty:
        return out
    for cls, part in _train_rows(stats, splits).groupby("pump_class", sort=True):
        k = int(part["regime"].max()) + 1
        parts = []
        for _, pump in part.groupby("pump_id", sort=True):
            arrays = []
            for prefix in ("n", "mean", "m2"):
                a = np.zeros((k, len(channels)))
                cols = [f"{prefix}:{c}" for c in channels]
                a[pump["regime"].to_numpy(dtype=int)] = pump[cols].to_numpy(dtype=np.float64)
                arrays.append(a)
            parts.append((arrays[0], arrays[1], arrays[2]))
        out[str(cls)] = merge_statistics(parts)
    return out


def specs_from_statistics(
    stats: pd.DataFrame,
    cfg: WindowConfig,
    fleet: FleetSchema,
    fits: dict[str, RegimeFit] | None = None,
    regime_stats: dict[str, tuple[Any, Any, Any]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Each class's feature spec from its training statistics (``class_statistics``) and,
    where it has several operating regimes, their fit and per-regime statistics over all
    of the dataset's channels (in ``fleet.channel_names`` order)."""
    fits, regime_stats = fits or {}, regime_stats or {}
    layout = list(fleet.channel_names)
    specs: dict[str, dict[str, Any]] = {}
    for _, row in stats.iterrows():
        cls = str(row["pump_class"])
        chans = [
            c
            for c in fleet.classes.get(cls, ())
            # A sensor that never changes (C-MAPSS s1, s5, ...) has a std of rounding
            # noise: float32 windows and float64 requests would normalise it to -10 and 0.
            if pd.notna(row[f"std({c})"])
            and row[f"std({c})"] > 1e-6 * max(abs(float(row[f"mean({c})"])), 1.0)
        ]
        if not chans:
            continue
        mean = [float(row[f"mean({c})"]) for c in chans]
        std = [float(row[f"std({c})"]) for c in chans]
        per_regime = regime_stats.get(cls)
        if per_regime is not None:
            idx = [layout.index(c) for c in chans]
            per_regime = (per_regime[0][:, idx], per_regime[1][:, idx], per_regime[2][:, idx])
        spec = FeatureSpec(
            pump_class=cls,
            channels=chans,
            window=cfg.window,
            stride=cfg.stride,
            interval_seconds=cfg.interval_seconds or fleet.interval_seconds,
            rul_cap_hours=cfg.rul_cap_hours,
            horizon_hours=cfg.horizon_hours,
            mean=mean,
            std=std,
            regimes=class_regimes(fits.get(cls), fleet.settings, per_regime, mean, std),
            setting_names=list(fleet.settings),
            # what ingest quarantines outside of, the scoring doors refuse outside of
            ranges={c: (fleet.channels[c].min, fleet.channels[c].max) for c in chans},
        )
        specs[cls] = spec.model_dump()
    return specs
