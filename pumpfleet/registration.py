"""A search's winning RUL model, from its checkpoint files to the class's registered
challenger: rebuilt from its state, exported to ONNX with the parity against torch
measured, plotted on the validation pumps, logged with the snapshot it was trained on,
and registered with its lineage."""

from __future__ import annotations

import itertools
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pumpfleet.features import FeatureSpec, decode_outputs
from pumpfleet.models import ModelConfig, build_model, describe
from pumpfleet.onnx_io import check_parity, parity_atol, to_onnx
from pumpfleet.registry import CHALLENGER, Registry, model_name
from pumpfleet.search_space import config_hash
from pumpfleet.snapshot import Snapshot
from pumpfleet.training import Arrays, predict

log = logging.getLogger(__name__)

RUL_BUCKETS = (0.0, 24.0, 72.0, 120.0)


@dataclass(frozen=True)
class Winner:
    """A class's best trial: its weights and model config (from its checkpoint), its
    trial config, MLflow run and best validation figures."""

    state: dict[str, Any]
    model_config: dict[str, Any]
    config: dict[str, Any]
    run_id: str
    val_metric: float
    val_rmse: float


def load_checkpoint(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The weights and model config a trial checkpoints (``state.pt``,
    ``model_config.json``)."""
    state = torch.load(folder / "state.pt", weights_only=True)
    return state, json.loads((folder / "model_config.json").read_text())


def register_winner(
    registry: Registry,
    snap: Snapshot,
    cls: str,
    winner: Winner,
    val: Arrays,
    tags: dict[str, str],
    metric: str,
) -> dict[str, Any]:
    """Export, check and register ``winner`` as the class's challenger; returns its
    entry in the training summary."""
    spec = snap.spec(cls)
    model = build_model(spec.n_channels, ModelConfig(**winner.model_config))
    model.load_state_dict(winner.state)
    onnx_bytes = to_onnx(model, spec.window, spec.n_channels)
    parity = check_parity(model, onnx_bytes, val.x[:1000])
    atol = parity_atol(model)
    run_id = winner.run_id
    parity_tags = {"onnx_parity_max_abs": f"{parity:.2e}", "onnx_parity_atol": f"{atol:.0e}"}
    registry.set_tags(run_id, {**parity_tags, **describe(model)})
    registry.log_snapshot_input(run_id, snap, cls)
    log_plots(registry, run_id, model, val, spec)
    uri = registry.log_model(run_id, onnx_bytes, spec, winner.state, winner.model_config)
    version = registry.register_as(
        uri,
        model_name(cls),
        CHALLENGER,
        tags={
            **tags,
            "pump_class": cls,
            f"val_{metric}": f"{winner.val_metric:.3f}",
            "run_id": run_id,
            "config_hash": config_hash(winner.config),
            "onnx_parity_max_abs": f"{parity:.2e}",
            "onnx_parity_atol": f"{atol:.0e}",
        },
    )
    log.info(
        "%s: registered %s v%s (val %s %.2f)",
        cls,
        model_name(cls),
        version,
        metric,
        winner.val_metric,
    )
    return {
        "version": version,
        "run_id": run_id,
        "val_metric": winner.val_metric,
        "val_rmse": winner.val_rmse,
        "onnx_parity": parity,
        "config": {k: v for k, v in winner.config.items() if k != "pump_class"},
    }


def log_plots(
    registry: Registry, run_id: str, model: torch.nn.Module, val: Arrays, spec: FeatureSpec
) -> None:
    """Predicted against true RUL, and the error by RUL bucket, on the validation pumps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rul, _ = decode_outputs(predict(model, val.x), spec)
    true = val.rul
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(true, rul, s=4, alpha=0.3)
    ax.plot([0, spec.rul_cap_hours], [0, spec.rul_cap_hours], color="black", lw=1)
    ax.set(xlabel="true RUL (h)", ylabel="predicted RUL (h)", title=f"{spec.pump_class}: val")
    registry.log_figure(run_id, fig, "plots/predicted_vs_true.png")
    plt.close(fig)

    edges = [e for e in RUL_BUCKETS if e < spec.rul_cap_hours] + [spec.rul_cap_hours]
    labels, rmses = [], []
    for lo, hi in itertools.pairwise(edges):
        sel = (true >= lo) & ((true < hi) if hi < spec.rul_cap_hours else (true <= hi))
        if sel.any():
            labels.append(f"{lo:.0f}-{hi:.0f}")
            rmses.append(float(np.sqrt(np.mean((rul[sel] - true[sel]) ** 2))))
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar(labels, rmses)
    ax.set(xlabel="true RUL bucket (h)", ylabel="RMSE (h)", title="error by RUL bucket")
    registry.log_figure(run_id, fig, "plots/error_by_rul_bucket.png")
    plt.close(fig)
