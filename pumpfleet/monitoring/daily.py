"""The monitor's daily fleet mode: each class's logged rows of its window, in daily chunks,
through the fleet method (:mod:`pumpfleet.fleet_drift`: per-pump, per-regime residuals)
against the windows of the champion's snapshot. Beside NannyML's chunks, not instead of
them: NannyML still estimates performance and watches the health scores.

A class's reference is its snapshot's windows of every split (their channel and setting
means, pump and site, in time order); served rows need only the pump id, the time and the
``in_*`` means, so a row from an older version without the settings' means counts for the
channels and not for new settings. What cannot be analysed is a note, never an error.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from pumpfleet.errors import PumpfleetError
from pumpfleet.features import FeatureSpec, window_summary
from pumpfleet.fleet_drift import (
    FleetDriftConfig,
    FleetReference,
    analyse_fleet,
    first_alerts,
    fit_reference,
    setting_means,
)
from pumpfleet.snapshot import Snapshot
from pumpfleet.windows import SPLITS

log = logging.getLogger(__name__)


def snapshot_frame(snap: Snapshot, cls: str, spec: FeatureSpec) -> pd.DataFrame:
    """Every window of a class in the snapshot as the log would summarise it."""
    frames = []
    for split in SPLITS:
        raw, cols = snap.load(cls, split, spec)
        if not len(raw):
            continue
        f = pd.DataFrame(window_summary(raw, spec) | setting_means(raw, spec))
        f["pump_id"] = np.asarray(cols["pump_id"]).astype(str)
        if "site" in cols:
            f["site"] = np.asarray(cols["site"]).astype(str)
        f["timestamp"] = pd.to_datetime(cols["end_time"], utc=True)
        frames.append(f)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def fleet_reference(
    snap: Snapshot, cls: str, spec: FeatureSpec, cfg: FleetDriftConfig
) -> FleetReference:
    regimes = spec.regimes
    return fit_reference(
        snapshot_frame(snap, cls, spec),
        spec.channels,
        spec.settings,
        np.asarray(regimes.center) if regimes else None,
        np.asarray(regimes.scale) if regimes else None,
        cfg,
    )


def fleet_daily(
    snap: Snapshot,
    cls: str,
    spec: FeatureSpec,
    rows: pd.DataFrame,
    cfg: FleetDriftConfig | None = None,
    consecutive: int = 2,
) -> dict[str, Any]:
    """A class's daily fleet signals in its summary's terms: the features that alerted
    (with the day of the first alert), the sites named, the days analysed; or a note."""
    cfg = cfg or FleetDriftConfig()
    try:
        ref = fleet_reference(snap, cls, spec, cfg)
        frame = rows.rename(columns=lambda c: str(c).removeprefix("in_"))
        for name in [*ref.channels, *ref.settings]:
            if name not in frame:
                frame[name] = np.nan
        frame = frame[frame["pump_id"].notna() & frame["timestamp"].notna()]
        signals = analyse_fleet(frame, ref, cfg)
    except (PumpfleetError, KeyError, ValueError) as e:
        log.warning("%s: no daily fleet signals: %s", cls, e)
        return {"note": f"{cls}: no daily fleet signals: {str(e).splitlines()[0][:200]}"}
    if signals.empty:
        return {"days": 0, "alerting_features": {}, "sites": []}
    first = first_alerts(signals, consecutive)
    days = signals.groupby("chunk")["start"].min().dt.strftime("%Y-%m-%d")
    site = signals[(signals["kind"] == "site") & signals["alert"]]
    return {
        "days": int(signals["chunk"].nunique()),
        "alerting_features": {f: str(days[c]) for f, c in sorted(first.items())},
        "sites": sorted({str(s) for s in site["detail"].dropna()}),
    }
