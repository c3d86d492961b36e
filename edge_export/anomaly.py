"""The anomaly (health) model in the edge bundle: a class's anomaly champion
(``pumpfleet-<class>-anomaly@champion``) as ONNX FP32 and as a weight-only INT8 variant
(the quantisation of the RUL variants, ``edge_export.variants.to_int8``), with its health
spec.

The anomaly ONNX maps standardised windows to each window's error ``[B, 1]``
(:class:`pumpfleet.anomaly.WindowError`); the device turns the error into a health score
and a flag with :class:`pumpfleet.health.HealthSpec`, as Serve does. So the INT8 variant
is measured by what the device does with it: on the holdout windows, the share of flags
that agree with FP32's and the largest health-score difference around and below the
threshold. A variant off those limits stays in the bundle marked ``within_accuracy:
false``, and the device runs FP32, as it does with a RUL variant over its RMSE limit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_export import trt, variants
from pumpfleet.errors import ParityError
from pumpfleet.features import FeatureSpec, window_features
from pumpfleet.health import HealthSpec, score_diff
from pumpfleet.manifest import ANOMALY_FEATURE_SPEC, GOLDEN_ANOMALY_KEY, HEALTH_SPEC
from pumpfleet.registry import CHAMPION, LoadedModel, Registry, anomaly_model_name
from pumpfleet.runtime import onnx_runner
from pumpfleet.scoring import anomaly_errors

log = logging.getLogger(__name__)

FP32, INT8 = variants.FP32, variants.INT8
FILES = {FP32: "anomaly.onnx", INT8: "anomaly_int8.onnx"}
# An INT8 variant is fit for the device when its flags agree with FP32's on at least
# this share of the holdout windows, and its health scores differ from FP32's by at most
# MAX_HEALTH_DIFF where FP32 scores at most NEAR_SCORE (a difference there can move a
# flag; far above the threshold both flag, whatever the score).
MIN_FLAG_AGREEMENT = 0.99
MAX_HEALTH_DIFF = 0.1
NEAR_SCORE = 2.0
# Self-test tolerance on golden health scores, relative above a score of 1: FP32 must
# reproduce the export's scores to this; INT8 gets a few times its measured difference.
FP32_HEALTH_ATOL = 1e-4
REDUCED_HEALTH_ATOL_FLOOR = 0.02
PARITY_RTOL = 1e-5  # ONNX vs torch window errors, relative above an error of 1


def champion(
    registry: Registry, cls: str, rul_spec: FeatureSpec
) -> tuple[LoadedModel | None, str | None]:
    """The class's anomaly champion, or None and why it is not in the bundle (none, a
    kind the device cannot run, or windows other than the RUL model's)."""
    name = anomaly_model_name(cls)
    if registry.version_by_alias(name, CHAMPION) is None:
        return None, f"no {name}@{CHAMPION}"
    model = registry.load(name, CHAMPION)
    cfg = model.model_config
    if cfg.get("kind") != "anomaly" or cfg.get("model_kind") != "conv_ae" or "health" not in cfg:
        why = f"kind {cfg.get('kind')!r}/{cfg.get('model_kind')!r}, not an ONNX conv_ae"
        return None, f"{name} v{model.version}: {why}"
    # The device cuts one window per pump and step for both models.
    if (model.spec.inputs, model.spec.window) != (rul_spec.inputs, rul_spec.window):
        return None, (
            f"{name} v{model.version} reads {model.spec.window} x {model.spec.inputs}, "
            f"the RUL model {rul_spec.window} x {rul_spec.inputs}"
        )
    return model, None


def torch_errors(model: LoadedModel, x: np.ndarray) -> np.ndarray:
    """Window errors of the registered torch weights: what the ONNX must reproduce."""

    from pumpfleet.anomaly import AnomalyConfig, build_autoencoder, window_errors

    ae = build_autoencoder(
        model.spec.n_channels, AnomalyConfig(**model.model_config["anomaly_config"])
    )
    ae.load_state_dict(model.state_dict())
    return window_errors(ae, x)


def errors(onnx_bytes: bytes, x: np.ndarray) -> np.ndarray:
    """Window errors ``[N]`` (float64) of an anomaly ONNX on feature windows ``x``."""
    return anomaly_errors(onnx_runner(onnx_bytes), x)


def measure(made: dict[str, bytes], x: np.ndarray, health: HealthSpec) -> dict[str, dict[str, Any]]:
    """Per variant, on holdout feature windows ``x``: flag agreement with FP32, largest
    health-score difference (all windows, and where FP32 scores at most NEAR_SCORE),
    bytes, the self-test tolerance and whether it is within the limits."""
    ref_errors = errors(made[FP32], x)
    ref, ref_flags = health.score(ref_errors), health.flag(ref_errors)
    base = len(made[FP32])
    out: dict[str, dict[str, Any]] = {}
    for name, onnx_bytes in made.items():
        e = errors(onnx_bytes, x)
        score, flags = health.score(e), health.flag(e)
        diff = score_diff(score, ref)
        near = diff[ref <= NEAR_SCORE]
        agreement = float(np.mean(flags == ref_flags)) if len(x) else 1.0
        near_max = float(near.max()) if len(near) else 0.0
        reduced = name != FP32
        out[name] = {
            "file": FILES[name],
            "precision": variants.PRECISION[name],
            "bytes": len(onnx_bytes),
            "size_ratio": round(len(onnx_bytes) / base, 4),
            "flag_agreement": round(agreement, 6),
            "flag_rate": round(float(np.mean(flags)), 6) if len(x) else 0.0,
            "max_health_diff": float(diff.max()) if len(x) else 0.0,
            "max_health_diff_near": near_max,
            "golden_atol": max(4 * near_max, REDUCED_HEALTH_ATOL_FLOOR)
            if reduced
            else FP32_HEALTH_ATOL,
            "within_accuracy": agreement >= MIN_FLAG_AGREEMENT and near_max <= MAX_HEALTH_DIFF,
        }
    return out


@dataclass(frozen=True)
class AnomalyPart:
    """What a class's anomaly model adds to its bundle."""

    members: dict[str, bytes]
    meta: dict[str, Any]  # the manifest's "anomaly" entry
    golden_errors: np.ndarray  # FP32 errors of the bundle's golden windows


def pack(
    model: LoadedModel,
    holdout_raw: np.ndarray,
    golden_raw: np.ndarray,
    parity_windows: int,
) -> AnomalyPart:
    """The anomaly model's members (FP32 and INT8 ONNX, feature spec, health spec) and
    manifest entry, measured on the holdout; the FP32 ONNX checked against its torch
    weights first."""
    health = HealthSpec.model_validate(model.model_config["health"])
    spec = model.spec
    x = window_features(holdout_raw, spec)
    got = errors(model.onnx, x[:parity_windows])
    want = torch_errors(model, x[:parity_windows])
    parity = float(np.max(np.abs(got - want) / np.maximum(1.0, want))) if len(got) else 0.0
    if parity > PARITY_RTOL:
        raise ParityError(
            f"{model.name} v{model.version}: ONNX errors differ from torch by {parity:.2e} "
            f"(limit {PARITY_RTOL:.0e})"
        )
    made = {
        FP32: model.onnx,
        INT8: variants.to_int8(model.onnx),
    }
    for onnx_bytes in made.values():
        variants.check(onnx_bytes)
    measured = measure(made, x, health)
    tensorrt = {}
    for name, onnx_bytes in made.items():
        c = trt.compatibility(onnx_bytes)
        tensorrt[name] = {"ok": c["ok"], "problems": c["problems"]}
    int8 = measured[INT8]
    if not int8["within_accuracy"]:
        log.warning(
            "%s v%s: INT8 off its limits (flags agree %.4f, health diff %.3f): devices run FP32",
            model.name,
            model.version,
            int8["flag_agreement"],
            int8["max_health_diff_near"],
        )
    meta = {
        "kind": "anomaly",
        "model_name": model.name,
        "version": model.version,
        "mlflow_run_id": model.run_id,
        "model_kind": model.model_config["model_kind"],
        "threshold": health.threshold,
        "target_far": health.target_far,
        "margin": health.margin,
        "health_file": HEALTH_SPEC,
        "feature_spec_file": ANOMALY_FEATURE_SPEC,
        "golden_key": GOLDEN_ANOMALY_KEY,
        "onnx_parity_max_rel": parity,
        "holdout_windows": len(x),
        "variants": measured,
        "accuracy_limit": {
            "flag_agreement": MIN_FLAG_AGREEMENT,
            "max_health_diff_near": MAX_HEALTH_DIFF,
            "near_score": NEAR_SCORE,
        },
        "tensorrt": tensorrt,
    }
    members = {FILES[n]: b for n, b in made.items()} | {
        ANOMALY_FEATURE_SPEC: spec.to_json().encode(),
        HEALTH_SPEC: health.to_json().encode(),
    }
    golden = errors(model.onnx, window_features(golden_raw, spec))
    return AnomalyPart(members=members, meta=meta, golden_errors=golden)
