"""Reproducing a recorded training trial: retrained from its snapshot, config and seed,
and its per-epoch validation metrics compared with the recorded ones. No Ray: the trial
runs here, on one thread as it did in Tune. Where the code (git commit) or a library
version differs from the run's, it says so: the numbers may then differ for that reason.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import torch

from pumpfleet.errors import DataError, InputError
from pumpfleet.features import FeatureSpec
from pumpfleet.lineage import code_tags, differences
from pumpfleet.registry import Registry
from pumpfleet.search_space import config_hash, train_config
from pumpfleet.settings import Settings
from pumpfleet.snapshot import open_snapshot
from pumpfleet.training import fit
from pumpfleet.training_run import load_data

log = logging.getLogger(__name__)


def reproduce(settings: Settings, run_id: str) -> dict[str, Any]:
    """Retrain one recorded trial from its snapshot, config and seed (one thread, like a
    trial) and compare its per-epoch validation metrics with the recorded ones."""
    registry = Registry(settings.tracking_uri, settings.artifact_root)
    params, run_tags, history = registry.run_record(run_id, ("rmse", "mae", "phm08"))
    snapshot = run_tags.get("feature_snapshot")
    if not snapshot or "pump_class" not in params:
        raise InputError(f"run {run_id} is not a training trial (no snapshot or class recorded)")
    config = parse_params(params)
    changed = differences(run_tags, code_tags(settings))
    for line in changed:
        log.warning("run %s was recorded with other code: %s", run_id, line)
    snap = open_snapshot(settings.features_uri, snapshot)
    cls = config["pump_class"]
    data = load_data(snap)
    if cls not in data:
        raise DataError(f"snapshot {snapshot} has no train and val windows of class {cls}")
    train, val, spec_json = data[cls]
    _, cfg = train_config(config)
    got: dict[str, dict[int, float]] = {k: {} for k in history}

    def on_epoch(epoch: int, report: dict[str, Any], model: Any, state: Any) -> None:
        for k in got:
            if report.get(k) is not None:
                got[k][epoch] = float(report[k])

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fit(train, val, FeatureSpec.model_validate_json(spec_json), cfg, on_epoch=on_epoch)
    finally:
        torch.set_num_threads(threads)
    diffs = {
        k: max((abs(got[k][e] - v) for e, v in history[k].items() if e in got[k]), default=None)
        for k in history
    }
    recorded_epochs = len(history.get("rmse", {}))
    return {
        "run_id": run_id,
        "pump_class": cls,
        "snapshot_id": snapshot,
        "config_hash": config_hash(config),
        "epochs_compared": recorded_epochs,
        "recorded": {k: v.get(max(v)) if v else None for k, v in history.items()},
        "reproduced": {k: got[k].get(max(history[k])) if history[k] else None for k in history},
        "max_abs_difference": diffs,
        "identical": all(d == 0.0 for d in diffs.values() if d is not None),
        "code_differs": changed,
    }


def parse_params(params: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in params.items():
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out
