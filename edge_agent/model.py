"""A verified bundle on the device, and a scorer for one of its model variants, with the
golden-window self-test. Where the bundle has an anomaly (health) model, the scorer holds
it too (:class:`edge_agent.health.HealthScorer`) and the self-test covers both.

Windows are scored by the one scoring path (:mod:`pumpfleet.scoring`) with the bundle's
own spec: the code training and the cloud service use.
"""

from __future__ import annotations

import hashlib
import io
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.health import HealthScorer, anomaly_variant
from pumpfleet import runtime
from pumpfleet.bundle import BundleId, read_bundle
from pumpfleet.device_settings import device_settings
from pumpfleet.errors import BundleError
from pumpfleet.features import FeatureSpec
from pumpfleet.manifest import FEATURE_SPEC, AnomalyEntry, BundleManifest, Variant
from pumpfleet.scoring import RulScores, score_rul

log = logging.getLogger(__name__)

FP32 = "fp32"
# On a GPU, FP32 convolutions and matrix products run in TF32 by default (TensorRT and
# cuDNN on Ampere, e.g. Jetson Orin): about 1e-3 relative. The golden tolerance there is
# at least this.
GPU_ATOL = 5e-3


@dataclass(frozen=True)
class Installed:
    """A bundle whose signature, manifest and hashes verified."""

    manifest: BundleManifest
    members: dict[str, bytes]
    path: Path

    @property
    def version(self) -> int:
        return int(self.manifest.model_version)

    @property
    def bundle_id(self) -> BundleId:
        """RUL and anomaly model versions: what updates tell bundles apart by."""
        return BundleId.of(self.manifest)

    @property
    def pump_class(self) -> str:
        return self.manifest.pump_class

    @property
    def spec(self) -> FeatureSpec:
        return FeatureSpec.from_json(self.members[FEATURE_SPEC])

    @property
    def alert_threshold(self) -> float:
        """The model's alert threshold: its feature spec's (one place; bundles for agents
        before 0.2 also carried a copy in ``thresholds.json``, not read)."""
        return self.spec.alert_threshold

    @property
    def anomaly(self) -> AnomalyEntry | None:
        """The manifest's anomaly model entry; None in a bundle without one."""
        return self.manifest.anomaly

    def variants(self) -> dict[str, Variant]:
        """The model variants with their measurements (a bundle from before variants
        has its one ``model.onnx`` as fp32)."""
        return self.manifest.variants

    def within_accuracy(self, variant: str) -> bool:
        """Whether a variant's holdout RMSE is within the bundle's accuracy limit."""
        return self.variants()[variant].rmse_ratio <= self.manifest.accuracy_limit.rmse_ratio

    def _golden(self) -> Any:
        found = self.manifest.golden
        if found is None:
            return None
        return np.load(io.BytesIO(self.members[found.file]), allow_pickle=False)

    def golden(self) -> tuple[np.ndarray, np.ndarray] | None:
        g = self._golden()
        if g is None:
            return None
        with g:
            return np.asarray(g["raw"]), np.asarray(g["expected"])

    def golden_anomaly_errors(self) -> np.ndarray | None:
        """The FP32 anomaly model's errors of the golden windows (None: no anomaly model)."""
        info, g = self.anomaly, self._golden()
        if info is None or g is None:
            return None
        with g:
            return np.asarray(g[info.golden_key], dtype=np.float64)


def open_bundle(path: Path, public_key: str | list[str], threshold: int = 1) -> Installed:
    """Read and verify a bundle (signed by ``threshold`` of the keys, the manifest's
    contract, every member's sha256)."""
    b = read_bundle(path, public_key, threshold)
    if FEATURE_SPEC not in b.members:
        raise BundleError(f"{path.name}: the bundle has no {FEATURE_SPEC}")
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
    """The core's onnxruntime session on the providers :func:`providers` picks."""
    return runtime.session(onnx_bytes, threads, providers(provider_kind, precision, engine_dir))


def _health(
    bundle: Installed, precision: str, threads: int, provider_kind: str, engine_dir: Path | None
) -> HealthScorer | None:
    """The bundle's anomaly model beside a RUL variant of ``precision`` (None: none)."""
    info = bundle.anomaly
    if info is None:
        return None
    variant = anomaly_variant(info, precision)
    found = info.variants.get(variant)
    if found is None:
        raise BundleError(f"bundle v{bundle.version}: the anomaly model has no {variant}")
    onnx_bytes = bundle.members[found.file]
    try:
        session = make_session(
            onnx_bytes,
            found.precision,
            threads,
            provider_kind,
            engine_dir or Path("engines"),
        )
    except Exception as e:  # onnxruntime's own errors: the model cannot be loaded
        raise BundleError(
            f"v{bundle.version} anomaly {variant}: onnxruntime refused it: {e}"
        ) from e
    on_gpu = runtime.provider_of(session) != runtime.CPU
    return HealthScorer(
        info,
        bundle.members,
        variant,
        runtime.runner(session),
        bundle.golden_anomaly_errors(),
        on_gpu,
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
        precision = info.precision
        try:
            self.session = make_session(
                bundle.members[info.file],
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
        # A graph with its batch fixed at 1 scores one window a call.
        self.run = runtime.runner(self.session, 1 if info.batch == 1 else None)
        self.golden_atol = info.golden_atol
        self.provider = runtime.provider_of(self.session)
        if self.provider != runtime.CPU:
            self.golden_atol = max(self.golden_atol, GPU_ATOL)

    @property
    def version(self) -> int:
        return self.bundle.version

    def predict(self, raw: np.ndarray, threshold: float | None = None) -> tuple[RulScores, float]:
        """Raw windows ``[N, W, C + S]`` scored by the one scoring path (an alert at
        ``threshold``, the bundle's own by default), and milliseconds per window."""
        started = time.perf_counter()
        scored = score_rul(raw, self.spec, self.run, threshold)
        return scored, (time.perf_counter() - started) * 1000.0 / max(len(raw), 1)

    def self_test(self) -> tuple[bool, str]:
        """Score the bundle's golden windows; they must give the expected outputs (from
        the FP32 model at export) within this variant's tolerance."""
        golden = self.bundle.golden()
        if golden is None:
            return False, "the bundle has no golden windows"
        raw, expected = golden
        try:
            got = score_rul(raw, self.spec, self.run).outputs
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
