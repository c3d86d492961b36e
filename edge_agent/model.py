"""A verified bundle on the device, and a scorer for one of its model variants, with the
golden-window self-test. Where the bundle has an anomaly (health) model, the scorer holds
it too (:class:`edge_agent.health.HealthScorer`) and the self-test covers both.

Features come from ``pumpfleet.features`` with the bundle's own spec: the code training
and the cloud service use.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.health import HealthScorer, anomaly_variant
from pumpfleet.bundle import BundleId, read_bundle
from pumpfleet.device_settings import device_settings
from pumpfleet.errors import BundleError
from pumpfleet.features import FeatureSpec, decode_outputs, window_features

log = logging.getLogger(__name__)

FP32 = "fp32"
INPUT, OUTPUT = "window", "scores"
# On a GPU, FP32 convolutions and matrix products run in TF32 by default (TensorRT and
# cuDNN on Ampere, e.g. Jetson Orin): about 1e-3 relative. The golden tolerance there is
# at least this.
GPU_ATOL = 5e-3


@dataclass(frozen=True)
class Installed:
    """A bundle whose signature and hashes verified."""

    manifest: dict[str, Any]
    members: dict[str, bytes]
    path: Path

    @property
    def version(self) -> int:
        return int(self.manifest["model_version"])

    @property
    def bundle_id(self) -> BundleId:
        """RUL and anomaly model versions: what updates tell bundles apart by."""
        return BundleId.of(self.manifest)

    @property
    def pump_class(self) -> str:
        return str(self.manifest["pump_class"])

    @property
    def spec(self) -> FeatureSpec:
        return FeatureSpec.from_json(self.members["feature_spec.json"])

    @property
    def alert_threshold(self) -> float:
        thresholds = json.loads(self.members["thresholds.json"])
        return float(thresholds["failure_probability_alert"])

    @property
    def anomaly(self) -> dict[str, Any] | None:
        """The manifest's anomaly model entry; None in a bundle without one."""
        found = self.manifest.get("anomaly")
        return dict(found) if found else None

    def variants(self) -> dict[str, dict[str, Any]]:
        """The model variants with their measurements (a bundle from before variants
        has its one ``model.onnx`` as fp32)."""
        found = self.manifest.get("variants")
        if found:
            return dict(found)
        return {FP32: {"file": "model.onnx", "precision": "fp32", "batch": "dynamic"}}

    def within_accuracy(self, variant: str) -> bool:
        """Whether a variant's holdout RMSE is within the bundle's accuracy limit."""
        limit = float(self.manifest.get("accuracy_limit", {}).get("rmse_ratio", 1.0))
        return float(self.variants()[variant].get("rmse_ratio", 1.0)) <= limit

    def golden(self) -> tuple[np.ndarray, np.ndarray] | None:
        name = self.manifest.get("golden", {}).get("file")
        if not name:
            return None
        with np.load(io.BytesIO(self.members[name]), allow_pickle=False) as g:
            return np.asarray(g["raw"]), np.asarray(g["expected"])

    def golden_anomaly_errors(self) -> np.ndarray | None:
        """The FP32 anomaly model's errors of the golden windows (None: no anomaly model)."""
        info, name = self.anomaly, self.manifest.get("golden", {}).get("file")
        if info is None or not name:
            return None
        with np.load(io.BytesIO(self.members[name]), allow_pickle=False) as g:
            return np.asarray(g[info["golden_key"]], dtype=np.float64)


def open_bundle(path: Path, public_key: str) -> Installed:
    """Read and verify a bundle (signature, then every member's sha256)."""
    b = read_bundle(path, public_key)
    for need in ("model_version", "pump_class"):
        if need not in b.manifest:
            raise BundleError(f"{path.name}: the manifest has no {need}")
    BundleId.of(b.manifest)  # model versions that are not numbers fail here, not later
    return Installed(manifest=b.manifest, members=b.members, path=path)


def engine_key(ort_version: str, device: str, cuda: str) -> str:
    """The folder engines are cached in: a TensorRT engine is specific to the GPU, the
    TensorRT and CUDA versions (fixed by the L4T release on a Jetson) and the runtime
    that built it; onnxruntime's own cache names add the graph and the GPU's compute
    capability."""
    body = f"{ort_version}|{device}|{cuda}"
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def _device() -> str:
    tegra = Path("/etc/nv_tegra_release")
    return tegra.read_text().splitlines()[0].strip() if tegra.exists() else "no-l4t"


def providers(kind: str, precision: str, engine_dir: Path) -> list[Any]:
    """onnxruntime execution providers: with ``auto``, TensorRT (its engines built on
    first use and cached under ``engine_dir``, keyed by :func:`engine_key`), then CUDA,
    where this onnxruntime has them; CPU always."""
    import onnxruntime as ort

    available = set(ort.get_available_providers()) if kind == "auto" else set()
    chosen: list[Any] = []
    if "TensorrtExecutionProvider" in available:
        key = engine_key(ort.__version__, _device(), device_settings().cuda_version)
        engine_dir = engine_dir / key
        engine_dir.mkdir(parents=True, exist_ok=True)
        chosen.append(
            (
                "TensorrtExecutionProvider",
                {
                    "trt_engine_cache_enable": True,
                    "trt_engine_cache_path": str(engine_dir),
                    "trt_fp16_enable": precision in ("fp16", "int8"),
                    "trt_int8_enable": precision == "int8",
                },
            )
        )
    if "CUDAExecutionProvider" in available:
        chosen.append("CUDAExecutionProvider")
    chosen.append("CPUExecutionProvider")
    return chosen


def make_session(
    onnx_bytes: bytes, precision: str, threads: int, provider_kind: str, engine_dir: Path
) -> Any:
    """An onnxruntime session on the providers :func:`providers` picks."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(
        onnx_bytes, opts, providers=providers(provider_kind, precision, engine_dir)
    )


def _health(
    bundle: Installed, precision: str, threads: int, provider_kind: str, engine_dir: Path | None
) -> HealthScorer | None:
    """The bundle's anomaly model beside a RUL variant of ``precision`` (None: none)."""
    info = bundle.anomaly
    if info is None:
        return None
    variant = anomaly_variant(info, precision)
    found = info.get("variants", {}).get(variant)
    if found is None:
        raise BundleError(f"bundle v{bundle.version}: the anomaly model has no {variant}")
    onnx_bytes = bundle.members[found["file"]]
    try:
        session = make_session(
            onnx_bytes,
            str(found.get("precision", "fp32")),
            threads,
            provider_kind,
            engine_dir or Path("engines"),
        )
    except Exception as e:  # onnxruntime's own errors: the model cannot be loaded
        raise BundleError(
            f"v{bundle.version} anomaly {variant}: onnxruntime refused it: {e}"
        ) from e
    on_gpu = str(session.get_providers()[0]) != "CPUExecutionProvider"
    return HealthScorer(
        info, bundle.members, variant, session, bundle.golden_anomaly_errors(), on_gpu
    )


class Scorer:
    """One variant of an installed bundle in an onnxruntime session."""

    def __init__(
        self,
        bundle: Installed,
        variant: str = FP32,
        threads: int = 1,
        provider_kind: str = "cpu",
        engine_dir: Path | None = None,
    ) -> None:
        variants = bundle.variants()
        if variant not in variants:
            raise BundleError(f"bundle v{bundle.version} has no variant {variant!r}")
        info = variants[variant]
        precision = str(info.get("precision", "fp32"))
        try:
            self.session = make_session(
                bundle.members[info["file"]],
                precision,
                threads,
                provider_kind,
                engine_dir or Path("engines"),
            )
        except Exception as e:  # onnxruntime's own errors: the model cannot be loaded
            raise BundleError(f"v{bundle.version} {variant}: onnxruntime refused it: {e}") from e
        self.health = _health(bundle, precision, threads, provider_kind, engine_dir)
        self.bundle = bundle
        self.variant = variant
        self.spec = bundle.spec
        self.batch_one = info.get("batch") == 1
        self.golden_atol = float(info.get("golden_atol", 1e-5))
        self.provider = str(self.session.get_providers()[0])
        if self.provider != "CPUExecutionProvider":
            self.golden_atol = max(self.golden_atol, GPU_ATOL)

    @property
    def version(self) -> int:
        return self.bundle.version

    def scores(self, x: np.ndarray) -> np.ndarray:
        """Model outputs ``[N, 2]`` for feature windows ``[N, W, C]``."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if len(x) == 0:
            return np.zeros((0, 2), dtype=np.float32)
        if self.batch_one:
            return np.concatenate(
                [self.session.run([OUTPUT], {INPUT: x[i : i + 1]})[0] for i in range(len(x))]
            )
        return np.asarray(self.session.run([OUTPUT], {INPUT: x})[0])

    def predict(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """For raw windows ``[N, W, C + S]``: RUL hours, failure probability, whether the
        outputs are finite, and milliseconds per window."""
        started = time.perf_counter()
        out = self.scores(window_features(raw, self.spec))
        ms = (time.perf_counter() - started) * 1000.0 / max(len(raw), 1)
        ok = np.isfinite(out).all(axis=1)
        rul, prob = decode_outputs(np.nan_to_num(out), self.spec)
        return rul, prob, ok, ms

    def self_test(self) -> tuple[bool, str]:
        """Score the bundle's golden windows; they must give the expected outputs (from
        the FP32 model at export) within this variant's tolerance."""
        golden = self.bundle.golden()
        if golden is None:
            return False, "the bundle has no golden windows"
        raw, expected = golden
        try:
            got = self.scores(window_features(raw, self.spec))
        except Exception as e:  # a model that cannot run fails its test
            return False, f"scoring the golden windows failed: {e}"
        if got.shape != expected.shape or not np.isfinite(got).all():
            return False, f"golden outputs are {got.shape} / not finite"
        err = float(np.max(np.abs(got - expected)))
        if err > self.golden_atol:
            return False, f"golden outputs differ by {err:.2e} (limit {self.golden_atol:.1e})"
        said = f"golden windows match to {err:.1e}"
        if self.health is None:
            return True, said
        ok, health_said = self.health.self_test(raw)
        return ok, f"{said}; {health_said}" if ok else health_said
