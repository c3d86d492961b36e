"""Edge export: each class's champion as ONNX, checked against its torch weights on real
windows, packed with its feature spec and thresholds into a signed bundle.

    python -m edge_export.export [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from pumpfleet import bundle
from pumpfleet.errors import RegistryError
from pumpfleet.features import window_features
from pumpfleet.onnx_io import check_parity
from pumpfleet.registry import CHAMPION, Registry, model_name
from pumpfleet.settings import Settings, get_settings
from pumpfleet.snapshot import open_snapshot
from ray_jobs.cli import run_main

log = logging.getLogger(__name__)

PARITY_WINDOWS = 1000


def signing_key_path(settings: Settings) -> Path:
    return settings.signing_key or settings.keys_dir / "bundle-signing.pem"


def export_class(
    registry: Registry, settings: Settings, cls: str, out_dir: Path, key: Any
) -> dict[str, Any]:
    name = model_name(cls)
    model = registry.load(name, CHAMPION)
    snapshot = model.tags.get("feature_snapshot", "latest")
    raw, _ = open_snapshot(str(settings.features_dir), snapshot).load(cls, "holdout")
    x = window_features(raw[:PARITY_WINDOWS], model.spec)
    parity = check_parity(model.torch_model(), model.onnx, x)
    thresholds = {
        "failure_probability_alert": model.spec.alert_threshold,
        "horizon_hours": model.spec.horizon_hours,
    }
    path = out_dir / cls / f"{name}-v{model.version}{bundle.SUFFIX}"
    manifest = bundle.write_bundle(
        path,
        {
            "model.onnx": model.onnx,
            "feature_spec.json": model.spec.to_json().encode(),
            "thresholds.json": json.dumps(thresholds, indent=2).encode(),
        },
        {
            "pump_class": cls,
            "model_name": name,
            "model_version": model.version,
            "mlflow_run_id": model.run_id,
            "feature_snapshot": snapshot,
            "onnx_parity_max_abs": parity,
            "parity_windows": len(x),
        },
        key,
    )
    bundle.read_bundle(path, bundle.public_key_hex(key))  # what a device will do
    log.info("%s: bundle %s (parity %.1e over %d windows)", cls, path, parity, len(x))
    return {
        "version": model.version,
        "bundle": str(path),
        "bytes": path.stat().st_size,
        "onnx_parity_max_abs": parity,
        "members": sorted(manifest["members"]),
    }


def run_export(settings: Settings, out: str | None = None) -> dict[str, Any]:
    registry = Registry(settings.tracking_uri, settings.artifact_root)
    out_dir = Path(out) if out else settings.bundles_dir
    key_path = signing_key_path(settings)
    key = bundle.load_or_create_key(key_path)
    results: dict[str, Any] = {}
    snap = open_snapshot(str(settings.features_dir))
    for cls in snap.classes:
        if registry.version_by_alias(model_name(cls), CHAMPION) is None:
            log.warning("%s: no champion; nothing to export", cls)
            continue
        results[cls] = export_class(registry, settings, cls, out_dir, key)
    if not results:
        raise RegistryError("no champion to export; run `pumpfleet evaluate` first")
    return {
        "bundles": results,
        "public_key": bundle.public_key_hex(key),
        "public_key_file": str(bundle.public_key_path(key_path)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edge_export.export", description=__doc__)
    parser.add_argument("--out", default=None, help="bundle folder (default: workspace/bundles)")
    args = parser.parse_args(argv)
    return run_main(lambda: run_export(get_settings(), args.out))


if __name__ == "__main__":
    raise SystemExit(main())
