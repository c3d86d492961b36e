"""The model variants an edge bundle carries, made from the registered FP32 ONNX:

- ``fp32``: the registered graph (opset 17, dynamic batch), checked and shape-inferred;
- ``fp32_b1``: the same graph with the batch fixed at 1 (static shapes: what TensorRT
  builds fastest, and what a device scoring one window at a time runs);
- ``fp16``: weights stored as float16 and cast back to float32 where they are read, so
  inputs and outputs stay float32 and every runtime (onnxruntime on CPU included) runs it;
  half the weight bytes. TensorRT builds it in FP16 precision;
- ``int8``: static quantisation to QDQ (onnxruntime.quantization, symmetric int8, per
  channel, the form TensorRT builds as explicit INT8), calibrated on training windows.

Each variant is checked (``onnx.checker``, strict shape inference) and measured on the
holdout against FP32: RMSE of the remaining useful life, the largest output difference
and the size.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pumpfleet import metrics
from pumpfleet.errors import ParityError
from pumpfleet.features import FeatureSpec
from pumpfleet.onnx_io import OPSET
from pumpfleet.runtime import INPUT, runner, session
from pumpfleet.scoring import RulScores, score_features

log = logging.getLogger(__name__)

FP32, FP32_B1, FP16, INT8 = "fp32", "fp32_b1", "fp16", "int8"
VARIANTS = (FP32, FP32_B1, FP16, INT8)
FILES = {
    FP32: "model.onnx",
    FP32_B1: "model_b1.onnx",
    FP16: "model_fp16.onnx",
    INT8: "model_int8.onnx",
}
PRECISION = {FP32: "fp32", FP32_B1: "fp32", FP16: "fp16", INT8: "int8"}
# A variant may cost at most this much holdout RMSE over FP32 (the INT8 target);
# the device's profiler picks the fastest variant within it.
RMSE_LIMIT = 1.03
# Self-test tolerance on the model's outputs (fractions in [0, 1]): FP32 must match the
# bundle's expected outputs to this; a reduced-precision variant gets a few times its
# measured error on the holdout, at least this floor.
FP32_ATOL = 1e-5
REDUCED_ATOL_FLOOR = 1e-3
CALIBRATION_BATCH = 64


@dataclass(frozen=True)
class Variant:
    name: str
    onnx: bytes


def check(onnx_bytes: bytes) -> Any:
    """``onnx.checker`` (full) and strict shape inference; the inferred model."""
    import onnx

    model = onnx.load_from_string(onnx_bytes)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset != OPSET:
        raise ParityError(f"the graph has opset {opset}, the edge needs {OPSET}")
    try:
        onnx.checker.check_model(model, full_check=True)
        return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ParityError(f"the ONNX graph does not check: {str(e).splitlines()[0]}") from None


def fixed_batch(onnx_bytes: bytes, batch: int = 1) -> bytes:
    """The graph with its batch dimension fixed at ``batch``, shapes inferred again."""
    import onnx

    model = onnx.load_from_string(onnx_bytes)
    for value in [*model.graph.input, *model.graph.output]:
        dim = value.type.tensor_type.shape.dim[0]
        dim.Clear()
        dim.dim_value = batch
    del model.graph.value_info[:]
    return bytes(onnx.shape_inference.infer_shapes(model).SerializeToString())


def to_fp16_weights(onnx_bytes: bytes, min_elements: int = 16) -> bytes:
    """Float32 initializers of ``min_elements`` or more stored as float16, each read
    through a Cast back to float32: inputs, outputs and arithmetic stay float32."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load_from_string(onnx_bytes)
    graph = model.graph
    casts = []
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT:
            continue
        array = numpy_helper.to_array(init)
        if array.size < min_elements:
            continue
        name = init.name
        half = f"{name}__fp16"
        init.CopyFrom(numpy_helper.from_array(array.astype(np.float16), half))
        casts.append(helper.make_node("Cast", [half], [name], to=TensorProto.FLOAT))
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend([*casts, *nodes])  # producers before their readers
    return _compact(model)


class _Calibration:
    """onnxruntime's CalibrationDataReader over feature windows, in batches."""

    def __init__(self, x: np.ndarray) -> None:
        self._batches: Iterator[np.ndarray] = iter(
            [x[i : i + CALIBRATION_BATCH] for i in range(0, len(x), CALIBRATION_BATCH)]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {INPUT: np.ascontiguousarray(batch, np.float32)}


def to_int8(onnx_bytes: bytes, calibration: np.ndarray) -> bytes:
    """Static quantisation to QDQ: symmetric int8 activations and per-channel weights
    (TensorRT's explicit-precision form), scales calibrated on ``calibration`` windows."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if len(calibration) == 0:
        raise ParityError("INT8 calibration needs training windows; the snapshot has none")

    class Reader(_Calibration, CalibrationDataReader):
        pass

    with tempfile.TemporaryDirectory(prefix="pumpfleet-int8-") as tmp:
        src, pre, out = (Path(tmp) / n for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        src.write_bytes(onnx_bytes)
        # onnxruntime's symbolic shape inference knows no ai.onnx.ml operator (the trees
        # of a gbm model); ONNX's own inference covers those graphs.
        opsets = onnx.load_from_string(onnx_bytes).opset_import
        trees = any(o.domain == "ai.onnx.ml" for o in opsets)
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=trees)
        quantize_static(
            str(pre),
            str(out),
            Reader(calibration),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            # 7-bit weights: x86 CPUs without VNNI (AVX2 only) run onnxruntime's fused
            # QLinearConv/QGemm through VPMADDUBSW, whose int16 pair sums saturate with
            # full-range int8 weights (output error ~0.17 here); with |w| <= 64 they cannot.
            reduce_range=True,
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
        )
        model = onnx.load(str(out))
    del model.metadata_props[:]
    return _compact(model)


def _compact(model: Any) -> bytes:
    """The model without what costs bytes on the device and nothing else: shape
    annotations, node names and long tensor names (QDQ adds four per quantised tensor,
    which on a small model outweigh the int8 weights)."""
    graph = model.graph
    keep = {v.name for v in [*graph.input, *graph.output]}
    names: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in keep:
            return name
        return names.setdefault(name, f"t{len(names)}")

    for init in graph.initializer:
        init.name = short(init.name)
    for node in graph.node:
        node.name = ""
        node.doc_string = ""
        node.input[:] = [short(n) for n in node.input]
        node.output[:] = [short(n) for n in node.output]
    del graph.value_info[:]
    return bytes(model.SerializeToString())


def make_variants(fp32: bytes, calibration: np.ndarray) -> list[Variant]:
    """Every variant of the FP32 graph, each checked."""
    out = [
        Variant(FP32, fp32),
        Variant(FP32_B1, fixed_batch(fp32)),
        Variant(FP16, to_fp16_weights(fp32)),
        Variant(INT8, to_int8(fp32, calibration)),
    ]
    for v in out:
        check(v.onnx)
    return out


def weight_bytes(onnx_bytes: bytes) -> int:
    """Bytes of the graph's initializers (the weights) as stored."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load_from_string(onnx_bytes)
    return int(sum(numpy_helper.to_array(i).nbytes for i in model.graph.initializer))


def measure(
    variants: list[Variant], x: np.ndarray, rul_hours: np.ndarray, spec: FeatureSpec
) -> dict[str, dict[str, Any]]:
    """Per variant, on holdout feature windows ``x`` with true RUL ``rul_hours``: holdout
    RMSE (hours) and its ratio to FP32, largest output difference from FP32, bytes and
    their ratio to FP32, and the self-test tolerance the device will apply."""
    by_name = {v.name: v for v in variants}

    def scored(v: Variant) -> RulScores:
        return score_features(x, spec, runner(session(v.onnx), 1 if v.name == FP32_B1 else None))

    ref = scored(by_name[FP32])
    ref_rmse = metrics.rmse(ref.rul_hours, rul_hours) if len(x) else 0.0
    base_bytes = len(by_name[FP32].onnx)
    base_weights = weight_bytes(by_name[FP32].onnx)
    out: dict[str, dict[str, Any]] = {}
    for v in variants:
        got = scored(v)
        diff = float(np.max(np.abs(got.outputs - ref.outputs))) if len(x) else 0.0
        rmse = metrics.rmse(got.rul_hours, rul_hours) if len(x) else 0.0
        wb = weight_bytes(v.onnx)
        reduced = PRECISION[v.name] != "fp32"
        out[v.name] = {
            "file": FILES[v.name],
            "precision": PRECISION[v.name],
            "batch": 1 if v.name == FP32_B1 else "dynamic",
            "bytes": len(v.onnx),
            "size_ratio": round(len(v.onnx) / base_bytes, 4),
            "weight_bytes": wb,
            "weight_ratio": round(wb / base_weights, 4) if base_weights else 1.0,
            "holdout_rmse_hours": round(rmse, 4),
            "rmse_ratio": round(rmse / ref_rmse, 4) if ref_rmse > 0 else 1.0,
            "max_abs_vs_fp32": diff,
            "golden_atol": max(4 * diff, REDUCED_ATOL_FLOOR) if reduced else FP32_ATOL,
        }
        if not reduced and diff > FP32_ATOL:
            raise ParityError(f"{v.name} differs from fp32 by {diff:.2e} on the holdout")
    return out
