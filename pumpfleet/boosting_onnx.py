"""One ONNX graph for a :class:`pumpfleet.boosting.BoostedTrees` model: the window
statistics (torch's exporter, from the very module the boosters trained on), each booster
converted by onnxmltools, the members' mean, and the two outputs side by side. Input
``window`` ``[N, W, C]``, output ``scores`` ``[N, 2]``, as every model kind's graph.
"""

from __future__ import annotations

import io
import warnings
from typing import Any

import onnx
from onnx import TensorProto, helper

from pumpfleet.runtime import INPUT, OUTPUT
from pumpfleet.window_stats import WindowStats, stat_names

FEATURES = "features"
# The newest main-domain opset onnxmltools 1.16's LightGBM converter writes for.
CONVERTER_OPSET = 15


def _stats_graph(
    window: int, n_channels: int, opset: int, multiscale: bool, lookback: int | None = None
) -> onnx.ModelProto:
    import torch

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        torch.onnx.export(
            WindowStats(window, multiscale, lookback),
            (torch.zeros(1, window, n_channels),),
            buf,  # type: ignore[arg-type]
            input_names=[INPUT],
            output_names=[FEATURES],
            dynamic_axes={INPUT: {0: "batch"}, FEATURES: {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )
    return onnx.load_from_string(buf.getvalue())


def _converted(booster: Any, n_features: int, prefix: str) -> onnx.ModelProto:
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    model = convert_lightgbm(
        booster,
        initial_types=[(FEATURES, FloatTensorType([None, n_features]))],
        target_opset=CONVERTER_OPSET,
        zipmap=False,
    )
    model = onnx.compose.add_prefix(model, prefix)
    for node in model.graph.node:  # every booster reads the one feature tensor
        node.input[:] = [FEATURES if i == prefix + FEATURES else i for i in node.input]
    return model


def boosted_onnx(
    window: int,
    n_channels: int,
    rul: list[Any],
    failure: list[Any],
    opset: int,
    multiscale: bool = False,
    lookback: int | None = None,
) -> bytes:
    """The graph of boosters ``rul`` (regression) and ``failure`` (binary) on
    :class:`WindowStats` of ``[N, window, n_channels]`` windows (of their last
    ``lookback`` steps, where given)."""
    stats = _stats_graph(window, n_channels, opset, multiscale, lookback)
    n_features = len(stat_names(min(lookback or window, window), multiscale)) * n_channels
    nodes = list(stats.graph.node)
    inits = list(stats.graph.initializer)
    ml_opset = 1
    heads: dict[str, list[str]] = {"rul": [], "failure": []}
    for head, boosters in (("rul", rul), ("failure", failure)):
        for i, booster in enumerate(boosters):
            conv = _converted(booster, n_features, f"{head}{i}_")
            nodes += conv.graph.node
            inits += conv.graph.initializer
            ml_opset = max(
                [ml_opset] + [o.version for o in conv.opset_import if o.domain == "ai.onnx.ml"]
            )
            outputs = [o.name for o in conv.graph.output]
            if head == "rul":
                heads[head].append(outputs[0])  # "variable" [N, 1]
            else:
                probs = f"{head}{i}_p1"  # P(failure): column 1 of "probabilities" [N, 2]
                nodes.append(
                    helper.make_node(
                        "Slice",
                        [outputs[-1], "one_i64", "two_i64", "one_i64"],
                        [probs],
                    )
                )
                heads[head].append(probs)
    inits += [
        helper.make_tensor("one_i64", TensorProto.INT64, [1], [1]),
        helper.make_tensor("two_i64", TensorProto.INT64, [1], [2]),
        helper.make_tensor("zero_f", TensorProto.FLOAT, [], [0.0]),
        helper.make_tensor("one_f", TensorProto.FLOAT, [], [1.0]),
    ]
    nodes += [
        helper.make_node("Mean", heads["rul"], ["rul_mean"]),
        helper.make_node("Clip", ["rul_mean", "zero_f", "one_f"], ["rul_fraction"]),
        helper.make_node("Mean", heads["failure"], ["failure_probability"]),
        helper.make_node("Concat", ["rul_fraction", "failure_probability"], [OUTPUT], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "pumpfleet-gbm",
        list(stats.graph.input),
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", 2])],
        inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("ai.onnx.ml", ml_opset)],
        producer_name="pumpfleet",
    )
    model.ir_version = stats.ir_version
    onnx.checker.check_model(model)
    return model.SerializeToString()


def mean_of_graphs(graphs: list[bytes]) -> bytes:
    """One graph whose ``scores`` are the mean of ``graphs``' (each ``window`` → ``scores``)."""
    parts = [onnx.load_from_string(g) for g in graphs]
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    outputs: list[str] = []
    opsets: dict[str, int] = {}
    for i, part in enumerate(parts):
        part = onnx.compose.add_prefix(part, f"m{i}_")
        for node in part.graph.node:
            node.input[:] = [INPUT if n == f"m{i}_{INPUT}" else n for n in node.input]
        nodes += part.graph.node
        inits += part.graph.initializer
        outputs.append(f"m{i}_{OUTPUT}")
        for o in part.opset_import:
            opsets[o.domain] = max(opsets.get(o.domain, 0), o.version)
    nodes.append(helper.make_node("Mean", outputs, [OUTPUT]))
    graph = helper.make_graph(
        nodes,
        "pumpfleet-blend",
        [
            helper.make_tensor_value_info(
                INPUT, TensorProto.FLOAT, ["batch", *_fixed_dims(parts[0])]
            )
        ],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", 2])],
        inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid(d, v) for d, v in sorted(opsets.items())],
        producer_name="pumpfleet",
    )
    model.ir_version = max(p.ir_version for p in parts)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _fixed_dims(model: onnx.ModelProto) -> list[int]:
    """The window and channel sizes of a graph's input ``[batch, W, C]``."""
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return [d.dim_value for d in dims[1:]]
