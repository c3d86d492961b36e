"""The model variants an edge bundle carries, made from the registered FP32 ONNX:

- ``fp32``: the registered graph (opset 17, dynamic batch), checked and shape-inferred;
- ``fp32_b1``: the same graph with the batch fixed at 1 (static shapes: what TensorRT
  builds fastest, and what a device scoring one window at a time runs);
- ``fp16``: weights stored as float16 and cast back to float32 where they are read, so
  inputs and outputs stay float32 and every runtime (onnxruntime on CPU included) runs it;
  half the weight bytes. TensorRT builds it in FP16 precision;
- ``int8``: weight-only int8: the weights of the ops that hold them (Conv, Gemm, MatMul,
  GRU / LSTM / RNN) stored as symmetric int8 with one scale per output channel, each read
  through a DequantizeLinear; activations and arithmetic stay float32. About a quarter of
  FP32's bytes; onnxruntime on CPU folds the weights back to float32 when it loads the
  graph (``pumpfleet.runtime`` turns its QDQ fusions off for that), so it runs at FP32's
  speed and within a few hundredths of a percent of its accuracy.
  Static activation quantisation (``to_int8_static``, the variant before this one) was
  larger (0.43 of FP32: four scale and zero-point tensors per quantised tensor) and
  slower per window on CPU than FP32; it stays for comparison in ``benchmarks.edge``.

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
# A variant may cost at most this much holdout RMSE over FP32 (2%); the device's
# profiler picks among the variants within it by speed and accuracy.
RMSE_LIMIT = 1.02
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


# Which input of an op is a weight and the axis of its output channels.
_WEIGHT_AXIS = {
    ("Conv", 1): 0,
    ("ConvTranspose", 1): 1,
    ("MatMul", 1): -1,
    ("GRU", 1): 1,
    ("GRU", 2): 1,
    ("LSTM", 1): 1,
    ("LSTM", 2): 1,
    ("RNN", 1): 1,
    ("RNN", 2): 1,
}
# Attributes equal to the operator's default carry no information.
_DEFAULTS: dict[str, dict[str, Any]] = {
    "Conv": {"group": 1, "dilations": 1, "strides": 1, "pads": 0},
    "Gemm": {"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 0},
}


def _weight_axis(node: Any, index: int, ndim: int) -> int | None:
    if node.op_type == "Gemm" and index == 1:
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    axis = _WEIGHT_AXIS.get((node.op_type, index))
    if axis is None or ndim < 2:
        return None
    return axis % ndim


def _drop_defaults(node: Any) -> None:
    from onnx import helper

    defaults = _DEFAULTS.get(node.op_type, {})
    keep = []
    for attr in node.attribute:
        value = helper.get_attribute_value(attr)
        want = defaults.get(attr.name)
        values = list(value) if isinstance(value, list | tuple) else [value]
        if want is None or any(v != want for v in values) or not values:
            keep.append(attr)
    if node.op_type == "Conv":  # inferred from the weight's shape
        keep = [a for a in keep if a.name != "kernel_shape"]
    del node.attribute[:]
    node.attribute.extend(keep)


def to_int8(onnx_bytes: bytes, min_elements: int = 16) -> bytes:
    """Weight-only int8: every float32 weight of ``min_elements`` or more that only
    Conv / Gemm / MatMul / recurrent ops read as their weight, stored as int8 with a
    symmetric scale per output channel (|w| / 127) and read through a DequantizeLinear;
    other float32 initializers of that size (biases) as float16 read through a Cast;
    Constant nodes as initializers; attributes at their defaults dropped."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load_from_string(onnx_bytes)
    graph = model.graph
    readers: dict[str, list[tuple[Any, int]]] = {}
    for node in graph.node:
        for i, name in enumerate(node.input):
            readers.setdefault(name, []).append((node, i))
    dequant = []
    for init in list(graph.initializer):
        if init.data_type != TensorProto.FLOAT:
            continue
        w = numpy_helper.to_array(init)
        axes = {_weight_axis(n, i, w.ndim) for n, i in readers.get(init.name, [])}
        if w.size < min_elements:
            continue
        name = init.name
        if len(axes) != 1 or None in axes:  # a bias: float16, read through a Cast
            init.CopyFrom(numpy_helper.from_array(w.astype(np.float16), f"{name}__h"))
            dequant.append(helper.make_node("Cast", [f"{name}__h"], [name], to=TensorProto.FLOAT))
            continue
        axis = int(next(iter(axes)))  # type: ignore[arg-type]
        amax = np.abs(np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)).max(axis=1)
        scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
        shape = [1] * w.ndim
        shape[axis] = -1
        q = np.clip(np.rint(w / scale.reshape(shape)), -127, 127).astype(np.int8)
        init.CopyFrom(numpy_helper.from_array(q, f"{name}__q"))
        graph.initializer.append(numpy_helper.from_array(scale, f"{name}__s"))
        dequant.append(
            helper.make_node("DequantizeLinear", [f"{name}__q", f"{name}__s"], [name], axis=axis)
        )
    nodes = []
    for node in graph.node:
        value = next((a for a in node.attribute if a.name == "value"), None)
        if node.op_type == "Constant" and value is not None and len(node.attribute) == 1:
            graph.initializer.append(
                numpy_helper.from_array(numpy_helper.to_array(value.t), node.output[0])
            )
            continue
        _drop_defaults(node)
        nodes.append(node)
    del graph.node[:]
    graph.node.extend([*dequant, *nodes])  # producers before their readers
    model.producer_name, model.producer_version, model.doc_string = "", "", ""
    del model.metadata_props[:]
    return _compact(model)


def to_int8_static(onnx_bytes: bytes, calibration: np.ndarray) -> bytes:
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


def make_variants(fp32: bytes) -> list[Variant]:
    """Every variant of the FP32 graph, each checked."""
    out = [
        Variant(FP32, fp32),
        Variant(FP32_B1, fixed_batch(fp32)),
        Variant(FP16, to_fp16_weights(fp32)),
        Variant(INT8, to_int8(fp32)),
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
