"""Drift of a large fleet in time order, in daily chunks: per-pump residuals, not
per-window distributions.

Why not compare each day's windows with a shuffled reference (NannyML's univariate
statistics, :mod:`pumpfleet.drift`): a day of a class's windows is not a random sample of
its history. The same pumps run all day in whatever regimes they are in, some are wearing
out, some were just repaired, so from one day to the next the windows' distribution moves
far more than the spread of random reference chunks allows (the time-ordered streams of
``benchmarks.monitor`` flagged 85-97 % of no-drift days). And a change on one site's few
pumps hardly moves a class's distribution at all. So each window is compared with its own
pump in the same operating regime instead:

- **Residual**: a window's channel mean relative to its regime's level for the class,
  minus the same relative deviation that pump showed in that regime over the reference
  (its offset). Pump-to-pump spread and regime changes cancel; what is left is the
  pump's change since the reference (wear, a repair, a sensor that moved). Windows whose
  settings sit between regimes (a setpoint change inside the window) are left out.
- **Class shift** (per channel, per day): the median over pumps of each pump's mean
  residual that day; wear and repairs touch a few pumps, so the median moves only when
  the class as a whole does (an ambient change, a firmware update). It alerts outside
  the calibration days' mean ± ``class_sd`` standard deviations, and never inside
  ± ``class_floor``.
- **Site shift** (per channel, per day): for each site, the median of its pumps' daily
  residuals less the class's, over its own standard error (from the spread of its pumps
  that day); the largest over sites alerts above ``site_z``. It sees a recalibration on
  one site's pumps, which the class median never would.
- **New settings** (per setting, per day): the share of windows whose settings lie
  outside every value the reference saw (a new operating regime); alerts above
  ``new_setting_share`` (and the calibration days' mean + ``class_sd`` sd).

The reference's first days give the regime levels and pump offsets, its last
``calibration_fraction`` the daily statistics the thresholds come from: out of sample, as
every later day will be. Pure numpy and pandas (no NannyML, which stays the monitor's
method for chunks of requests drawn from the whole fleet and for performance estimation:
its univariate statistics compare a chunk's distribution with reference chunks that are
random samples, which a day of one fleet in time order is not). ``benchmarks.fleet_monitor``
chose the thresholds and measures the method; see docs/monitoring.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pumpfleet.alerts import AlertPolicy, hysteresis
from pumpfleet.errors import DataError
from pumpfleet.features import FeatureSpec

SIGNAL_COLUMNS = ["chunk", "start", "end", "kind", "signal", "value", "lower", "upper", "alert"]
_MAD = 1.4826  # MAD to standard deviation, normal data
_MEDIAN_SE = 1.2533  # standard error of a median over that of a mean, normal data


@dataclass(frozen=True)
class FleetDriftConfig:
    """Chunking and thresholds of the fleet method (chosen with ``benchmarks.fleet_monitor``
    on its tuning seeds; see docs/benchmarks.md)."""

    period: str = "D"  # one chunk per calendar day (UTC)
    class_sd: float = 6.0
    class_floor: float = 0.004  # relative: 0.4 % of the channel's regime level
    # On the tuning seeds' no-drift days the largest site |z| was 3.5; at 7 a +5 % site
    # recalibration took 3 days on a seed it was checked on (docs/benchmarks.md).
    site_z: float = 5.0
    new_setting_share: float = 0.01
    calibration_fraction: float = 0.4  # of the reference's days
    min_offset_windows: int = 12  # a pump's windows in a regime for an offset of its own
    min_site_pumps: int = 5
    pure_tolerance: float = 0.05  # of each setting's scale: a window within one regime
    min_pumps: int = 20  # a day's class statistics need this many pumps


@dataclass
class FleetReference:
    """What a class's days are compared with: regimes, their levels, each pump's offsets
    and site, the settings seen, and the thresholds set on the calibration days."""

    channels: list[str]
    settings: list[str]
    center: np.ndarray  # [k, S] regime centres in the settings' units
    scale: np.ndarray  # [S]
    level: np.ndarray  # [k, C] the class's median channel mean per regime
    offsets: pd.DataFrame  # index (pump_id, regime) → [C] relative offsets
    pump_offsets: pd.DataFrame  # index pump_id → [C] (a regime the pump had no windows in)
    sites: pd.Series  # pump_id → site
    setting_range: np.ndarray  # [S, 2]
    class_mean: np.ndarray = field(default_factory=lambda: np.zeros(0))  # [C]
    class_sd: np.ndarray = field(default_factory=lambda: np.zeros(0))  # [C]
    setting_mean: np.ndarray = field(default_factory=lambda: np.zeros(0))  # [S]
    setting_sd: np.ndarray = field(default_factory=lambda: np.zeros(0))  # [S]
    calibration_days: int = 0
    notes: list[str] = field(default_factory=list)


def _regime(frame: pd.DataFrame, ref: FleetReference, cfg: FleetDriftConfig) -> np.ndarray:
    """Each window's regime (index into ``ref.center``), or -1 where its settings are
    missing or between regimes."""
    if not ref.settings:
        return np.zeros(len(frame), dtype=np.int64)
    s = frame[ref.settings].to_numpy(np.float64) / ref.scale
    d = np.abs(s[:, None, :] - (ref.center / ref.scale)[None]).max(axis=-1)  # [N, k]
    d = np.nan_to_num(d, nan=np.inf)
    near = d.argmin(axis=1)
    return np.where(d[np.arange(len(s)), near] <= cfg.pure_tolerance, near, -1)


def _relative(frame: pd.DataFrame, reg: np.ndarray, ref: FleetReference) -> np.ndarray:
    """Windows' channel means relative to their regime's level ``[N, C]`` (NaN where the
    regime is unknown)."""
    x = frame[ref.channels].to_numpy(np.float64)
    level = ref.level[np.maximum(reg, 0)]
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = (x - level) / np.abs(level)
    rel[reg < 0] = np.nan
    return rel


def residuals(frame: pd.DataFrame, ref: FleetReference, cfg: FleetDriftConfig) -> pd.DataFrame:
    """Each window's residual per channel (NaN: no regime or no offset for its pump),
    with ``pump_id``, ``site`` and ``timestamp``."""
    reg = _regime(frame, ref, cfg)
    rel = _relative(frame, reg, ref)
    keys = pd.MultiIndex.from_arrays([frame["pump_id"].astype(str), reg])
    off = ref.offsets.reindex(keys).to_numpy(np.float64)
    fallback = ref.pump_offsets.reindex(frame["pump_id"].astype(str)).to_numpy(np.float64)
    off = np.where(np.isnan(off), fallback, off)
    out = pd.DataFrame(rel - off, columns=ref.channels, index=frame.index)
    out["pump_id"] = frame["pump_id"].astype(str).to_numpy()
    out["site"] = ref.sites.reindex(out["pump_id"]).to_numpy()
    out["timestamp"] = frame["timestamp"].to_numpy()
    return out


def fit_reference(
    frame: pd.DataFrame,
    channels: Sequence[str],
    settings: Sequence[str] = (),
    center: np.ndarray | None = None,
    scale: np.ndarray | None = None,
    cfg: FleetDriftConfig | None = None,
) -> FleetReference:
    """A class's reference from its windows in time order (``pump_id``, ``timestamp``,
    optionally ``site``, the channels' and settings' window means). ``center`` and
    ``scale``: its regimes (a feature spec's); without them, one regime."""
    cfg = cfg or FleetDriftConfig()
    frame = frame.sort_values("timestamp", kind="stable").reset_index(drop=True)
    days = pd.to_datetime(frame["timestamp"], utc=True).dt.floor(cfg.period)
    order = np.sort(days.unique())
    n_cal = round(len(order) * cfg.calibration_fraction)
    if len(order) - n_cal < 2 or n_cal < 3:
        raise DataError(
            f"the reference spans {len(order)} days: too few to set fleet drift thresholds "
            f"(it needs 3 calibration days, the last {cfg.calibration_fraction:.0%}, and 2 "
            "before them)"
        )
    cut = order[len(order) - n_cal]
    base = frame[days < cut]
    has_settings = bool(settings) and center is not None and len(center) > 0
    sets = list(settings) if has_settings else []
    c = np.asarray(center if has_settings else np.zeros((1, 0)), np.float64)
    sc = np.asarray(scale if has_settings and scale is not None else np.ones(len(sets)))
    sites = (
        frame.drop_duplicates("pump_id", keep="last").set_index("pump_id")["site"].astype(str)
        if "site" in frame
        else pd.Series(dtype=str)
    )
    ref = FleetReference(
        list(channels), sets, c, sc, np.zeros((len(c), len(channels))), pd.DataFrame(),
        pd.DataFrame(), sites, np.zeros((len(sets), 2)),
    )  # fmt: skip
    reg = _regime(base, ref, cfg)
    x = base[ref.channels].to_numpy(np.float64)
    for k in range(len(c)):
        ref.level[k] = np.nanmedian(x[reg == k], axis=0) if (reg == k).any() else np.nan
    if np.isnan(ref.level).any():
        ref.notes.append("a regime or channel had no reference windows: left out")
    rel = pd.DataFrame(_relative(base, reg, ref), columns=ref.channels)
    rel["pump_id"] = base["pump_id"].astype(str).to_numpy()
    rel["regime"] = reg
    rel = rel[reg >= 0]
    grouped = rel.groupby(["pump_id", "regime"])
    enough = grouped.size() >= cfg.min_offset_windows
    ref.offsets = grouped[ref.channels].median()[enough]
    ref.pump_offsets = rel.groupby("pump_id")[ref.channels].median()
    if sets:
        s = base[sets].to_numpy(np.float64)
        tol = cfg.pure_tolerance * sc
        ref.setting_range = np.stack([np.nanmin(s, 0) - tol, np.nanmax(s, 0) + tol], axis=1)
    cal = frame[days >= cut]
    stats = _daily(cal, ref, cfg)
    ref.calibration_days = len(stats)
    cls_cols = [f"class:{ch}" for ch in ref.channels]
    ref.class_mean = stats[cls_cols].mean().to_numpy(np.float64)
    ref.class_sd = stats[cls_cols].std().fillna(0.0).to_numpy(np.float64)
    new_cols = [f"new:{s}" for s in sets]
    ref.setting_mean = stats[new_cols].mean().to_numpy(np.float64)
    ref.setting_sd = stats[new_cols].std().fillna(0.0).to_numpy(np.float64)
    return ref


def setting_means(raw: np.ndarray, spec: FeatureSpec) -> dict[str, np.ndarray]:
    """Each window's mean of the operating settings it carries after its channels
    (``[N, W, C + S]``; none without regimes): logged beside the channels' means
    (:func:`pumpfleet.features.window_summary`), so that new settings can be seen."""
    raw = np.asarray(raw, dtype=np.float64)
    c = spec.n_channels
    if raw.ndim != 3 or raw.shape[-1] < c + len(spec.settings):
        return {}
    with np.errstate(invalid="ignore"):
        means = np.nanmean(raw[..., c : c + len(spec.settings)], axis=-2) if spec.settings else None
    return {s: means[:, i] for i, s in enumerate(spec.settings)} if means is not None else {}


def first_alerts(signals: pd.DataFrame, consecutive: int = 1) -> dict[str, int]:
    """Each feature (channel or setting) whose daily alerts raise an alert
    (``consecutive`` in a row), with the chunk of its first."""
    uni = signals[signals["kind"] == "univariate"]
    policy = AlertPolicy(consecutive=consecutive, clear_after=consecutive)
    out = {}
    for name, g in uni.groupby("signal"):
        a = hysteresis(str(name), [bool(v) for v in g.sort_values("chunk")["alert"]], policy)
        if a.first_raised is not None:
            out[str(name)] = int(g.sort_values("chunk")["chunk"].iloc[a.first_raised])
    return out


def _site_z(per_pump: pd.DataFrame, ch: str, cfg: FleetDriftConfig) -> tuple[float, str | None]:
    """The largest |z| over sites of one channel's site shift, and that site."""
    p = per_pump[[ch, "site"]].dropna()
    if p.empty:
        return np.nan, None
    centred = p[ch] - p[ch].median()
    g = centred.groupby(p["site"])
    n = g.size()
    med = g.median()
    mad = g.apply(lambda v: float(np.median(np.abs(v - v.median()))))
    floor = float(np.median(np.abs(centred))) * 0.25 + 1e-12  # a site of identical pumps
    se = _MEDIAN_SE * _MAD * np.maximum(mad, floor) / np.sqrt(n)
    z = (med / se)[n >= cfg.min_site_pumps]
    if z.empty:
        return np.nan, None
    site = str(z.abs().idxmax())
    return float(z.abs().max()), site


def _daily(frame: pd.DataFrame, ref: FleetReference, cfg: FleetDriftConfig) -> pd.DataFrame:
    """One row per chunk (day): its start and end, pumps, the class shift and the largest
    site |z| (with the site) of each channel, and the share of windows with new settings."""
    if frame.empty:
        return pd.DataFrame()
    res = residuals(frame, ref, cfg)
    ts = pd.to_datetime(frame["timestamp"], utc=True)
    day = ts.dt.floor(cfg.period).to_numpy()
    rows = []
    for d in np.unique(day):
        mine = day == d
        r = res[mine]
        per_pump = r.groupby("pump_id")[ref.channels].mean()
        per_pump["site"] = ref.sites.reindex(per_pump.index).to_numpy()
        row: dict[str, object] = {
            "day": d,
            "start": ts[mine].min(),
            "end": ts[mine].max(),
            "windows": int(mine.sum()),
            "pumps": int(per_pump[ref.channels].notna().any(axis=1).sum()),
        }
        for ch in ref.channels:
            counted = per_pump[ch].notna().sum()
            row[f"class:{ch}"] = per_pump[ch].median() if counted >= cfg.min_pumps else np.nan
            row[f"site:{ch}"], row[f"where:{ch}"] = _site_z(per_pump, ch, cfg)
        s = frame.loc[mine, ref.settings].to_numpy(np.float64)
        for i, name in enumerate(ref.settings):
            v = s[:, i][~np.isnan(s[:, i])]
            lo, hi = ref.setting_range[i]
            row[f"new:{name}"] = float(((v < lo) | (v > hi)).mean()) if len(v) else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def analyse_fleet(
    frame: pd.DataFrame,
    ref: FleetReference,
    cfg: FleetDriftConfig | None = None,
    first_chunk: int = 0,
) -> pd.DataFrame:
    """A class's signals per daily chunk, tidy (``SIGNAL_COLUMNS`` and ``detail``): per
    channel a ``univariate`` row (the class shift; it alerts when the class or a site
    shifts), a ``site`` row (the largest site |z|, the site in ``detail``), and per
    setting a ``univariate`` row (the share of windows with new settings)."""
    cfg = cfg or FleetDriftConfig()
    daily = _daily(frame, ref, cfg)
    out: list[list[object]] = []
    for i, d in enumerate(daily.to_dict("records")):
        at = [first_chunk + i, d["start"], d["end"]]
        for j, ch in enumerate(ref.channels):
            half = max(cfg.class_sd * ref.class_sd[j], cfg.class_floor)
            lo, hi = ref.class_mean[j] - half, ref.class_mean[j] + half
            v, z, site = d[f"class:{ch}"], d[f"site:{ch}"], d[f"where:{ch}"]
            site_alert = bool(np.isfinite(z) and z > cfg.site_z)
            class_alert = bool(np.isfinite(v) and not lo <= v <= hi)
            why = "site" if site_alert and not class_alert else "class"
            out.append([*at, "univariate", ch, v, lo, hi, class_alert or site_alert, why])
            out.append([*at, "site", ch, z, np.nan, cfg.site_z, site_alert, site])
        for j, name in enumerate(ref.settings):
            v = d[f"new:{name}"]
            hi = max(cfg.new_setting_share, ref.setting_mean[j] + cfg.class_sd * ref.setting_sd[j])
            alert = bool(np.isfinite(v) and v > hi)
            out.append([*at, "univariate", name, v, np.nan, hi, alert, "new settings"])
    return pd.DataFrame(out, columns=[*SIGNAL_COLUMNS, "detail"])
