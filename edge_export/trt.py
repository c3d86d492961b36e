"""TensorRT: a compatibility check of an ONNX graph (pure Python, run at export), and an
engine builder through the TensorRT Python API (run on the device, or a machine with the
device's GPU, TensorRT and CUDA).

Engines are specific to the GPU, the TensorRT version and the CUDA version, so a bundle
carries ONNX and a build profile (``build_profile.json``), and the device builds each
engine once and caches it under a key made of those versions.

Where TensorRT is not installed, :func:`unavailable` says so in one line and the caller
goes on without an engine.

    python -m edge_export.trt BUNDLE --public-key HEX|FILE [--variant int8] [--cache DIR]

Imports only the standard library at module level (``onnx`` for the check and
``tensorrt`` for the build are imported where used), so a device can run the builder.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from pumpfleet.errors import BundleError, PumpfleetError
from pumpfleet.manifest import BUILD_PROFILE

log = logging.getLogger(__name__)

PROFILE_FILE = BUILD_PROFILE
MAX_BATCH = 64  # the optimisation profile's upper bound on the batch dimension

# ONNX operators the TensorRT ONNX parser (onnx-tensorrt, TensorRT 8.6 and 10.x) imports
# at opset 17, from its operator support matrix. Anything outside this list fails the
# check, so a graph that passes builds on a Jetson without surprises.
_OPS = """
    Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool
    BatchNormalization Cast Ceil Celu Clip Concat Constant ConstantOfShape Conv
    ConvTranspose Cos Cosh CumSum DepthToSpace DequantizeLinear Div Dropout Einsum Elu
    Equal Erf Exp Expand EyeLike Flatten Floor GRU Gather GatherElements GatherND Gemm
    GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample
    HardSigmoid HardSwish Hardmax Identity If InstanceNormalization IsInf IsNaN LRN LSTM
    LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax Loop LpNormalization
    LpPool MatMul Max MaxPool Mean Min Mish Mod Mul Neg NonMaxSuppression NonZero Not
    OneHot Or PRelu Pad ParametricSoftplus Pow QuantizeLinear RNN RandomNormal
    RandomNormalLike RandomUniform RandomUniformLike Range Reciprocal ReduceL1 ReduceL2
    ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum
    ReduceSumSquare Relu Reshape Resize ReverseSequence RoiAlign Round ScaledTanh
    ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax
    Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu
    Tile TopK Transpose Trilu Unsqueeze Where Xor
"""
SUPPORTED_OPS = frozenset(_OPS.split())
# Tensor element types TensorRT has no kernels for (float64, strings, complex).
_UNSUPPORTED_TYPES = {11: "float64", 8: "string", 14: "complex64", 15: "complex128"}


def _ops(graph: Any) -> set[str]:
    """Every op type of a graph and of its subgraphs (If / Loop bodies)."""
    found: set[str] = set()
    for node in graph.node:
        found.add(
            node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
        )
        for attr in node.attribute:
            if attr.g is not None and len(attr.g.node):
                found |= _ops(attr.g)
            for g in attr.graphs:
                found |= _ops(g)
    return found


def build_profile(onnx_bytes: bytes, max_batch: int = MAX_BATCH) -> dict[str, Any]:
    """The optimisation profile of a graph: per input, min / opt / max shapes. A
    symbolic first (batch) dimension is bounded by 1 … ``max_batch`` (opt 1: a device
    scores one window at a time); any other symbolic dimension is an error."""
    import onnx

    model = onnx.load_from_string(onnx_bytes)
    inputs: dict[str, Any] = {}
    initializers = {i.name for i in model.graph.initializer}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims = value.type.tensor_type.shape.dim
        lo, hi = [], []
        for axis, d in enumerate(dims):
            if d.HasField("dim_value") and d.dim_value > 0:
                lo.append(d.dim_value)
                hi.append(d.dim_value)
            elif axis == 0:
                lo.append(1)
                hi.append(max_batch)
            else:
                raise BundleError(
                    f"input {value.name!r} axis {axis} ({d.dim_param or '?'}) is not static: "
                    "TensorRT needs it bounded"
                )
        inputs[value.name] = {"min": lo, "opt": lo, "max": hi}
    return {"inputs": inputs, "static": all(v["min"] == v["max"] for v in inputs.values())}


def compatibility(onnx_bytes: bytes) -> dict[str, Any]:
    """Whether TensorRT can build this graph: every op supported at opset 17, no tensor
    type it lacks, every shape static or bounded by the profile."""
    import onnx

    model = onnx.load_from_string(onnx_bytes)
    problems: list[str] = []
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or opset > 17:
        problems.append(f"opset {opset} (TensorRT on Jetson is checked at 17)")
    ops = _ops(model.graph)
    unsupported = sorted(ops - SUPPORTED_OPS)
    if unsupported:
        problems.append(f"unsupported ops: {', '.join(unsupported)}")
    tensors = [*model.graph.input, *model.graph.output, *model.graph.value_info]
    for t in tensors:
        if t.type.tensor_type.elem_type in _UNSUPPORTED_TYPES:
            kind = _UNSUPPORTED_TYPES[t.type.tensor_type.elem_type]
            problems.append(f"tensor {t.name!r} is {kind}")
    for init in model.graph.initializer:
        if init.data_type in _UNSUPPORTED_TYPES:
            problems.append(f"initializer {init.name!r} is {_UNSUPPORTED_TYPES[init.data_type]}")
    profile: dict[str, Any] | None = None
    try:
        profile = build_profile(onnx_bytes)
    except BundleError as e:
        problems.append(str(e))
    return {"ok": not problems, "problems": problems, "ops": sorted(ops), "profile": profile}


# --- the builder (device side) ---------------------------------------------------------


def unavailable() -> str | None:
    """None where TensorRT can be imported; else one line saying why not."""
    try:
        import tensorrt  # noqa: F401
    except ImportError as e:
        return f"TensorRT is not installed here ({e.name or 'tensorrt'}): engine build skipped"
    return None


def device_fingerprint() -> str:
    """What an engine is specific to, besides TensorRT: the GPU (name and compute
    capability, from nvidia-smi, or the L4T release on a Jetson) and the CUDA version."""
    parts = []
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run(
                [smi, "--query-gpu=name,compute_cap,driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout
            parts.append(out.strip().splitlines()[0] if out.strip() else "gpu?")
        except (OSError, subprocess.SubprocessError):
            parts.append("gpu?")
    tegra = Path("/etc/nv_tegra_release")
    if tegra.exists():
        parts.append(tegra.read_text().splitlines()[0].strip())
    from pumpfleet.device_settings import device_settings

    parts.append(f"cuda={device_settings().cuda_version}")
    return "; ".join(parts)


def engine_key(onnx_bytes: bytes, precision: str, trt_version: str, device: str) -> str:
    """The cache key of an engine: the graph, the precision, TensorRT and the device."""
    body = json.dumps(
        {
            "onnx": hashlib.sha256(onnx_bytes).hexdigest(),
            "precision": precision,
            "tensorrt": trt_version,
            "device": device,
        },
        sort_keys=True,
    )
    return hashlib.sha256(body.encode()).hexdigest()[:24]


def build_engine(
    onnx_bytes: bytes,
    precision: str,
    profile: dict[str, Any],
    cache_dir: Path,
    workspace_mb: int = 256,
) -> Path:
    """A serialized TensorRT engine for the graph, built once per key and cached in
    ``cache_dir``. FP16 sets the FP16 flag; INT8 is the QDQ graph's explicit precision
    (with FP16 allowed for the layers it leaves in float)."""
    import tensorrt as trt

    cache_dir.mkdir(parents=True, exist_ok=True)
    path = (
        cache_dir
        / f"{engine_key(onnx_bytes, precision, trt.__version__, device_fingerprint())}.plan"
    )
    if path.exists():
        log.info("TensorRT engine cached: %s", path)
        return path
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flag = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)
    network = builder.create_network(0 if flag is None else 1 << int(flag))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise BundleError(f"TensorRT cannot parse the graph: {errors[0] if errors else '?'}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
    opt = builder.create_optimization_profile()
    for name, shapes in profile["inputs"].items():
        opt.set_shape(name, shapes["min"], shapes["opt"], shapes["max"])
    config.add_optimization_profile(opt)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BundleError("TensorRT could not build an engine (see its log above)")
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(bytes(serialized))
    tmp.replace(path)
    log.info("TensorRT engine built: %s", path)
    return path


def main(argv: list[str] | None = None) -> int:
    from pumpfleet.bundle import read_bundle

    parser = argparse.ArgumentParser(prog="python -m edge_export.trt", description=__doc__)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--public-key", required=True, help="hex, or a file holding it")
    parser.add_argument("--variant", default="int8", help="fp32, fp32_b1, fp16 or int8")
    parser.add_argument("--cache", type=Path, default=Path("engines"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname).1s %(name)s: %(message)s")
    reason = unavailable()
    if reason:
        print(reason)
        return 0
    key = Path(args.public_key)
    public = key.read_text().strip() if key.is_file() else args.public_key
    try:
        b = read_bundle(args.bundle, public)
        variant = b.manifest.variants[args.variant]
        profiles = json.loads(b.members[PROFILE_FILE])
        path = build_engine(
            b.members[variant.file],
            variant.precision,
            profiles[args.variant],
            args.cache,
        )
    except (PumpfleetError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
