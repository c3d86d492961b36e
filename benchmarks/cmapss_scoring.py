"""Scoring on NASA C-MAPSS for ``benchmarks.cmapss``: each test unit's last window, the
validation units cut like the test set, the training-mean baseline, and RMSE / PHM08
score in cycles. The models are scored as served: the registered ONNX through
:mod:`pumpfleet.scoring`'s feature path, in onnxruntime.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pumpfleet.settings import Settings

CAP = 125  # cycles
FIRST_CUT = 20  # validation units are scored cut at every cycle from this one on


def last_windows(readings: pd.DataFrame, inputs: list[str], window: int) -> tuple[list[str], Any]:
    """Each pump's last ``window`` readings of ``inputs`` ``[P, window, len(inputs)]``,
    pumps in id order; a pump with fewer readings is padded at the front with its first."""
    ids, out = [], []
    for pump, rows in readings.sort_values(["pump_id", "timestamp"]).groupby("pump_id"):
        values = rows[inputs].to_numpy(dtype=np.float64)[-window:]
        if len(values) < window:
            values = np.vstack([np.repeat(values[:1], window - len(values), axis=0), values])
        ids.append(str(pump))
        out.append(values)
    return ids, np.stack(out) if out else np.zeros((0, window, len(inputs)))


def score(pred: Any, true: Any) -> dict[str, float]:
    """RMSE and PHM08 score (in cycles) of predicted against true RUL, both capped."""
    from pumpfleet.metrics import phm08_score, rmse

    pred, true = np.minimum(pred, CAP), np.minimum(true, CAP)
    return {"rmse": rmse(pred, true), "score": phm08_score(pred, true)}


def read_table(path: Path) -> pd.DataFrame:
    import pyarrow.dataset as pads

    return pads.dataset(str(path), format="parquet", partitioning="hive").to_table().to_pandas()


def score_test(settings: Settings, test_dir: Path, cls: str, hours: float) -> dict[str, Any]:
    """The registered challenger, in onnxruntime, on each test unit's last window."""
    from pumpfleet import runtime
    from pumpfleet.features import decode_outputs, window_features
    from pumpfleet.models import describe
    from pumpfleet.registry import CHALLENGER, Registry, model_name

    loaded = Registry(settings.tracking_uri, settings.artifact_root).load(
        model_name(cls), CHALLENGER, dst=settings.home / "challenger"
    )
    spec = loaded.spec
    readings = read_table(test_dir / "readings")
    readings = readings[readings["pump_class"] == cls]
    ids, raw = last_windows(readings, spec.inputs, spec.window)
    # As float32, the precision the snapshot stores windows in and the model was trained
    # on: the ingest keeps sensors that never change (C-MAPSS s1, s5, s10, s16) with a
    # standard deviation of ~1e-12, so float64 readings would standardise them to ~0
    # where training saw the clip value -10.
    raw = raw.astype(np.float32)
    out = runtime.run(runtime.session(loaded.onnx), window_features(raw, spec))
    rul_hours, _ = decode_outputs(out, spec)
    truth = read_table(test_dir / "truth").set_index("pump_id").loc[ids]
    true = truth["true_rul_cycles"].to_numpy(dtype=np.float64)
    pred = rul_hours / hours
    return {
        **score(pred, true),
        "units": len(ids),
        "window": spec.window,
        "padded": int(sum(n < spec.window for n in readings.groupby("pump_id").size())),
        "model_version": loaded.version,
        "model_config": loaded.model_config,
        "model": describe(loaded.torch_model()),
        "predictions": {i: round(float(p), 2) for i, p in zip(ids, pred, strict=True)},
    }


def cut_windows(values: Any, window: int, first: int) -> Any:
    """The window ending at every cycle from ``first`` on of one pump's readings
    ``[T, C]``, as the test set would show it cut there: ``[T - first + 1, window, C]``,
    padded at the front with the first reading where fewer than ``window`` came before."""
    padded = np.vstack([np.repeat(values[:1], window - 1, axis=0), values])
    ends = np.arange(first, len(values) + 1)  # cycles seen
    return np.stack([padded[t - 1 : t - 1 + window] for t in ends])


def score_val(
    settings: Settings, snapshot: str, train_dir: Path, cls: str, hours: float
) -> dict[str, Any]:
    """The challenger on the validation units (held out of training), cut like the test
    set: at every cycle from ``FIRST_CUT`` on, only the window ending there scored (shorter
    prefixes padded), against the capped RUL there, in cycles."""
    from pumpfleet import runtime
    from pumpfleet.features import decode_outputs, window_features
    from pumpfleet.registry import CHALLENGER, Registry, model_name
    from pumpfleet.snapshot import open_snapshot

    loaded = Registry(settings.tracking_uri, settings.artifact_root).load(
        model_name(cls), CHALLENGER, dst=settings.home / "challenger-val"
    )
    spec = loaded.spec
    splits = open_snapshot(str(settings.features_dir), snapshot).manifest["splits"]
    readings = read_table(train_dir / "readings")
    readings = readings[readings["pump_class"] == cls].sort_values(["pump_id", "timestamp"])
    raws, trues = [], []
    for pump, rows in readings.groupby("pump_id"):
        if splits.get(str(pump)) != "val" or len(rows) < FIRST_CUT:
            continue
        raws.append(cut_windows(rows[spec.inputs].to_numpy(np.float64), spec.window, FIRST_CUT))
        trues.append(np.arange(len(rows) - FIRST_CUT, -1, -1, dtype=np.float64))
    raw = np.concatenate(raws).astype(np.float32)  # float32: see _score_test
    out = runtime.run(runtime.session(loaded.onnx), window_features(raw, spec))
    pred = decode_outputs(out, spec)[0] / hours
    return {"units": len(raws), "cuts": len(raw), **score(pred, np.concatenate(trues))}


def train_mean_baseline(test_dir: Path, train_dir: Path, hours: float) -> dict[str, float]:
    """Predicting every test unit the mean capped RUL of all training cycles."""
    readings = read_table(train_dir / "readings")
    t = readings.groupby("pump_id")["timestamp"]
    rul = (t.transform("max") - readings["timestamp"]).dt.total_seconds() / 3600.0 / hours
    mean = float(np.minimum(rul, CAP).mean())
    truth = read_table(test_dir / "truth")["true_rul_cycles"].to_numpy(dtype=np.float64)
    return {"prediction": round(mean, 2), **score(np.full(len(truth), mean), truth)}
