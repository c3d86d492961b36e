"""A small real workspace for the edge tests: a hand-written feature snapshot, a model
trained on it for a few epochs, registered in MLflow on SQLite as champion, and exported
into signed bundles by the real export. No Ray."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pumpfleet.features import FeatureSpec
from pumpfleet.registry import CHAMPION, Registry, model_name
from pumpfleet.settings import Settings

CLS = "esp"
W = 12
CHANNELS = ["motor_temp", "flow", "vibration"]
CAP = 100.0
SPEC = FeatureSpec(
    pump_class=CLS,
    channels=CHANNELS,
    window=W,
    stride=1,
    interval_seconds=3600,
    rul_cap_hours=CAP,
    horizon_hours=20,
    alert_threshold=0.5,
    mean=[70.0, 100.0, 1.0],
    std=[5.0, 10.0, 0.5],
)


def raw_windows(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Raw windows ``[n, W, 3]`` whose motor temperature rises as the RUL falls."""
    rng = np.random.default_rng(seed)
    rul = rng.uniform(0, CAP, n)
    raw = np.empty((n, W, len(CHANNELS)))
    raw[..., 0] = 70 + (1 - rul[:, None] / CAP) * 15 + rng.normal(0, 1, (n, W))
    raw[..., 1] = 100 + rng.normal(0, 10, (n, W))
    raw[..., 2] = 1 + (1 - rul[:, None] / CAP) + rng.normal(0, 0.2, (n, W))
    return raw, rul


def write_snapshot(features: Path, snapshot: str = "snap1") -> None:
    rows: list[dict[str, Any]] = []
    flats = []
    for split, n, seed in [("train", 600, 0), ("val", 100, 1), ("holdout", 300, 2)]:
        raw, rul = raw_windows(n, seed)
        for i in range(n):
            rows.append(
                {
                    "pump_id": f"{CLS}-{split}-{i % 3}",
                    "site": "s1",
                    "split": split,
                    "end_time": 1_700_000_000_000 + i * 3_600_000,
                    "rul_hours": rul[i],
                    "failure_within_horizon": int(rul[i] <= SPEC.horizon_hours),
                }
            )
        flats.append(raw.reshape(n, -1).astype(np.float32))
    flat = np.concatenate(flats).reshape(-1)
    table = pa.Table.from_pylist(rows).cast(
        pa.schema(
            [
                ("pump_id", pa.string()),
                ("site", pa.string()),
                ("split", pa.string()),
                ("end_time", pa.timestamp("ms", tz="UTC")),
                ("rul_hours", pa.float32()),
                ("failure_within_horizon", pa.int8()),
            ]
        )
    )
    table = table.append_column(
        "window", pa.FixedSizeListArray.from_arrays(pa.array(flat), W * len(CHANNELS))
    )
    part = features / snapshot / "windows" / f"pump_class={CLS}"
    part.mkdir(parents=True)
    pq.write_table(table, part / "part-0.parquet")
    manifest = {"specs": {CLS: SPEC.model_dump(mode="json")}, "channels": CHANNELS}
    (features / snapshot / "manifest.json").write_text(json.dumps(manifest))
    (features / "LATEST").write_text(snapshot)


def train_model(seed: int, epochs: int = 4) -> Any:
    import torch

    from pumpfleet.features import window_features
    from pumpfleet.models import ModelConfig
    from pumpfleet.training import Arrays, TrainConfig, fit

    torch.set_num_threads(1)

    def arrays(n: int, s: int) -> Arrays:
        raw, rul = raw_windows(n, s)
        return Arrays(
            x=window_features(raw, SPEC),
            rul=rul.astype(np.float32),
            failure=(rul <= SPEC.horizon_hours).astype(np.int8),
        )

    cfg = TrainConfig(model=ModelConfig(kind="cnn", hidden=16), epochs=epochs, seed=seed)
    model, _ = fit(arrays(600, 0), arrays(100, 1), SPEC, cfg)
    return model, cfg.model.model_dump()


def register_champion(reg: Registry, model: Any, model_config: dict[str, Any]) -> str:
    from pumpfleet.onnx_io import to_onnx

    run_id = reg.start_run("pumpfleet-train", "edge-test")
    uri = reg.log_model(
        run_id, to_onnx(model, W, len(CHANNELS)), SPEC, model.state_dict(), model_config
    )
    reg.end_run(run_id)
    version = reg.register(uri, model_name(CLS), tags={"feature_snapshot": "snap1"})
    reg.set_alias(model_name(CLS), CHAMPION, version)
    return version


@dataclass(frozen=True)
class EdgeWorkspace:
    settings: Settings
    registry: Registry
    public_key: str
    bundles: dict[str, Path]  # by model version
    exports: dict[str, dict[str, Any]]


def make_workspace(home: Path, versions: int = 2) -> EdgeWorkspace:
    """A workspace with ``versions`` champions exported in turn (v1, v2, ...)."""
    from edge_export.export import run_export

    os.environ.pop("MLFLOW_TRACKING_URI", None)
    settings = Settings(home=home)
    write_snapshot(settings.features_dir)
    reg = Registry(settings.tracking_uri, settings.artifact_root)
    bundles: dict[str, Path] = {}
    exports: dict[str, dict[str, Any]] = {}
    public = ""
    for seed in range(versions):
        model, cfg = train_model(seed)
        version = register_champion(reg, model, cfg)
        out = run_export(settings)
        public = out["public_key"]
        exports[version] = out["bundles"][CLS]
        bundles[version] = Path(out["bundles"][CLS]["bundle"])
    return EdgeWorkspace(settings, reg, public, bundles, exports)


_BUILT: dict[int, EdgeWorkspace] = {}


def shared_workspace(base: Path, versions: int = 2) -> EdgeWorkspace:
    """One workspace per test session (building one takes seconds): tests read it and
    copy a bundle before changing it."""
    if versions not in _BUILT:
        _BUILT[versions] = make_workspace(base / f"edge-ws-{versions}", versions)
    return _BUILT[versions]
