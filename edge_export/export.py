"""Edge export: each class's champion as ONNX, checked against its torch weights on real
windows, made into its variants (FP32 dynamic batch and batch 1, FP16, weight-only INT8), each
measured on the holdout, checked for TensorRT, and packed with its feature spec,
thresholds, golden windows and build profile into a signed bundle that is also logged as
an artifact of the model version's run. Where the class has an anomaly (health) champion,
the bundle carries it too, FP32 and weight-only INT8, with its health spec
(:mod:`edge_export.anomaly`).

    python -m edge_export.export [--class C] [--out DIR]
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge_export import anomaly, trt, variants
from pumpfleet import bundle, lifecycle, storage
from pumpfleet.entry import exiting, run_main
from pumpfleet.errors import InputError, RegistryError
from pumpfleet.features import window_features
from pumpfleet.manifest import FEATURE_SPEC, GOLDEN, GOLDEN_ANOMALY_KEY
from pumpfleet.onnx_io import check_parity
from pumpfleet.registry import CHAMPION, Registry, anomaly_model_name, model_name
from pumpfleet.settings import Settings, get_settings
from pumpfleet.snapshot import open_snapshot

log = logging.getLogger(__name__)

PARITY_WINDOWS = 1000
HOLDOUT_WINDOWS = 10_000  # the accuracy of each variant is measured on up to this many
GOLDEN_WINDOWS = 32
GOLDEN_FILE = GOLDEN
# The oldest agent that understands this bundle's layout (variants, golden windows).
# 0.2: the alert threshold is read from the feature spec alone (no thresholds.json).
MIN_AGENT_VERSION = "0.2.0"
ARTIFACT_PATH = "edge_bundle"
# No device installs a bundle past this many days after its export (a freeze: a mirror
# or an attacker holding devices on an old bundle); export again to roll one out later.
EXPIRES_DAYS = 90.0


def release_meta(now: float, expires_days: float) -> dict[str, Any]:
    """A bundle's freshness fields (pumpfleet.trust): its release, the export time in
    milliseconds (it grows with every export), and when it expires."""
    return {
        "release": int(now * 1000),
        "expires": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + expires_days * 86400)),
    }


def signing_key_path(settings: Settings) -> Path:
    return settings.signing_key or settings.keys_dir / "bundle-signing.pem"


def _spread(n_total: int, n: int) -> np.ndarray:
    """``n`` indices spread evenly over ``n_total`` (all of them if fewer)."""
    if n_total <= n:
        return np.arange(n_total)
    return np.linspace(0, n_total - 1, n).round().astype(int)


def golden(
    raw: np.ndarray, expected: np.ndarray, anomaly_errors: np.ndarray | None = None
) -> bytes:
    """The golden windows member: raw windows and the FP32 model's outputs for them (and
    the FP32 anomaly model's window errors, where the bundle has one)."""
    arrays = {"raw": raw.astype(np.float64), "expected": expected.astype(np.float32)}
    if anomaly_errors is not None:
        arrays[GOLDEN_ANOMALY_KEY] = np.asarray(anomaly_errors, dtype=np.float64)
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]  # mypy reads **kw as allow_pickle
    return buf.getvalue()


def rolled_back_above(registry: Registry, name: str, version: int | None) -> list[int]:
    """The versions of ``name`` above ``version`` (all, if None) that were rolled back in
    the registry: a device that runs one of them takes this bundle as the rollback, though
    it is older (edge_agent.updates.rolls_back)."""
    return sorted(
        int(v)
        for v, tags in registry.versions(name).items()
        if int(v) > (version or 0) and lifecycle.rolled_back(tags)
    )


def export_class(
    registry: Registry,
    settings: Settings,
    cls: str,
    out_dir: str,
    key: Any,
    expires_days: float = EXPIRES_DAYS,
) -> dict[str, Any]:
    name = model_name(cls)
    model = registry.load(name, CHAMPION)
    snapshot = model.tags.get("feature_snapshot", "latest")
    snap = open_snapshot(settings.features_uri, snapshot)
    raw, cols = snap.load(cls, "holdout", model.spec)
    keep = _spread(len(raw), HOLDOUT_WINDOWS)
    raw, rul = raw[keep], np.asarray(cols["rul_hours"], dtype=np.float64)[keep]
    x = window_features(raw, model.spec)
    parity = check_parity(model.torch_model(), model.onnx, x[:PARITY_WINDOWS])
    made = variants.make_variants(model.onnx)
    measured = variants.measure(made, x, rul, model.spec)
    profiles, compat = {}, {}
    for v in made:
        c = trt.compatibility(v.onnx)
        compat[v.name] = {"ok": c["ok"], "problems": c["problems"]}
        if c["profile"] is not None:
            profiles[v.name] = c["profile"]
    pick = _spread(len(raw), GOLDEN_WINDOWS)
    expected = model.runner()(x[pick])
    health_model, skipped = anomaly.champion(registry, cls, model.spec)
    part = (
        anomaly.pack(health_model, raw, raw[pick], PARITY_WINDOWS)
        if health_model is not None
        else None
    )
    if skipped:
        log.info("%s: no anomaly model in the bundle (%s)", cls, skipped)
    members = {variants.FILES[v.name]: v.onnx for v in made} | {
        FEATURE_SPEC: model.spec.to_json().encode(),
        GOLDEN_FILE: golden(raw[pick], expected, part.golden_errors if part else None),
        trt.PROFILE_FILE: json.dumps(profiles, indent=2).encode(),
    }
    extra: dict[str, Any] = {}
    if part is not None:
        members |= part.members
        extra["anomaly"] = part.meta
    # A device tells bundles apart by this id: a new anomaly champion with the same RUL
    # champion is a bundle of its own, and reaches devices by itself.
    bundle_id = bundle.BundleId(
        int(model.version), int(part.meta["version"]) if part is not None else None
    )
    dest = storage.join(out_dir, cls, f"{name}-{bundle_id}{bundle.SUFFIX}")
    # A bundle bound for object storage is made and checked here, then uploaded whole.
    staged = tempfile.mkdtemp(prefix="pumpfleet-bundle-") if storage.is_remote(dest) else None
    path = Path(staged, dest.rsplit("/", 1)[1]) if staged else Path(dest)
    manifest = bundle.write_bundle(
        path,
        members,
        {
            "pump_class": cls,
            "model_name": name,
            "model_version": model.version,
            "mlflow_run_id": model.run_id,
            "feature_snapshot": snap.id,
            "min_agent_version": MIN_AGENT_VERSION,
            "onnx_parity_max_abs": parity,
            "parity_windows": min(len(x), PARITY_WINDOWS),
            "holdout_windows": len(x),
            "variants": measured,
            "accuracy_limit": {"rmse_ratio": variants.RMSE_LIMIT},
            "golden": {"file": GOLDEN_FILE, "windows": len(pick)},
            "tensorrt": compat,
            "rolled_back": {
                "rul": rolled_back_above(registry, name, bundle_id.rul),
                "anomaly": rolled_back_above(registry, anomaly_model_name(cls), bundle_id.anomaly),
            },
            **release_meta(time.time(), expires_days),
            **extra,
        },
        key,
    )
    bundle.read_bundle(path, bundle.public_key_hex(key))  # what a device will do
    registry.log_artifact(model.run_id, path, ARTIFACT_PATH)
    if part is not None:
        registry.log_artifact(part.meta["mlflow_run_id"], path, ARTIFACT_PATH)
    size = path.stat().st_size
    if staged:
        storage.write_bytes(dest, path.read_bytes())
        shutil.rmtree(staged)
    log.info("%s: bundle %s (parity %.1e over %d windows)", cls, dest, parity, len(x))
    if reason := trt.unavailable():
        log.info("%s", reason)
    return {
        "version": model.version,
        "bundle_id": str(bundle_id),
        "bundle": dest,
        "bytes": size,
        "release": manifest.release,
        "expires": manifest.expires,
        "onnx_parity_max_abs": parity,
        "members": sorted(manifest.members),
        "variants": {
            n: {k: v[k] for k in ("bytes", "size_ratio", "holdout_rmse_hours", "rmse_ratio")}
            for n, v in measured.items()
        },
        "tensorrt_compatible": all(c["ok"] for c in compat.values()),
        "artifact": f"runs:/{model.run_id}/{ARTIFACT_PATH}/{path.name}",
        "anomaly": _anomaly_summary(part.meta) if part else {"skipped": skipped},
    }


def _anomaly_summary(meta: dict[str, Any]) -> dict[str, Any]:
    keys = ("bytes", "flag_agreement", "max_health_diff_near", "within_accuracy")
    return {
        "version": meta["version"],
        "threshold": meta["threshold"],
        "target_far": meta["target_far"],
        "variants": {n: {k: v[k] for k in keys} for n, v in meta["variants"].items()},
    }


def run_export(
    settings: Settings,
    out: str | None = None,
    pump_class: str | None = None,
    expires_days: float = EXPIRES_DAYS,
) -> dict[str, Any]:
    registry = Registry(settings.tracking_uri, settings.artifact_root)
    out_dir = out or settings.bundles_uri
    key_path = signing_key_path(settings)
    key = bundle.load_or_create_key(key_path)
    results: dict[str, Any] = {}
    snap = open_snapshot(settings.features_uri)
    if pump_class is not None and pump_class not in snap.classes:
        raise InputError(f"--class {pump_class}: not a class of the snapshot {snap.classes}")
    for cls in [pump_class] if pump_class else snap.classes:
        if registry.version_by_alias(model_name(cls), CHAMPION) is None:
            log.warning("%s: no champion; nothing to export", cls)
            continue
        results[cls] = export_class(registry, settings, cls, out_dir, key, expires_days)
    if not results:
        raise RegistryError("no champion to export; run `pumpfleet evaluate` first")
    return {
        "bundles": results,
        "public_key": bundle.public_key_hex(key),
        "public_key_file": str(bundle.public_key_path(key_path)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edge_export.export", description=__doc__)
    parser.add_argument("--class", dest="pump_class", default=None, help="only this class")
    parser.add_argument("--out", default=None, help="bundle folder (default: workspace/bundles)")
    args = parser.parse_args(argv)
    return run_main(lambda: run_export(get_settings(), args.out, args.pump_class))


if __name__ == "__main__":
    raise SystemExit(exiting(main()))
