"""The weight-only INT8 variant: its size at the default edge model, its weights within
half a step of FP32's per output channel, its scores within its parity limit of FP32's
through the product's session builder (which folds the weights back on CPU), and the
device's choice between variants by speed and accuracy."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edge_agent.profile import SPEED_TIE, choose
from edge_export import variants
from pumpfleet.runtime import run, session


def _fp32(kind: str = "cnn", hidden: int = 32, window: int = 24, channels: int = 6) -> bytes:
    import torch

    from pumpfleet.models import ModelConfig, build_model
    from pumpfleet.onnx_io import to_onnx

    torch.manual_seed(0)
    return to_onnx(build_model(channels, ModelConfig(kind=kind, hidden=hidden)), window, channels)


def test_int8_is_at_most_030_of_fp32_at_the_default_edge_model() -> None:
    fp32 = _fp32()  # benchmarks.edge's default: cnn, hidden 32, window 24 x 6 channels
    int8 = variants.to_int8(fp32)
    variants.check(int8)
    assert len(int8) / len(fp32) <= 0.30
    assert variants.weight_bytes(int8) / variants.weight_bytes(fp32) <= 0.30


def test_int8_weights_are_within_half_a_step_per_output_channel() -> None:
    fp32 = _fp32()
    src = {i.name: numpy_helper.to_array(i) for i in onnx.load_from_string(fp32).graph.initializer}
    conv_w = next(w for w in src.values() if w.ndim == 3 and w.shape[1] > 6)  # 2nd conv
    model = onnx.load_from_string(variants.to_int8(fp32))
    got = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    deq = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    assert len(deq) == 3  # two convolutions and the head; biases are float16
    q, scale = next(
        (got[n.input[0]], got[n.input[1]]) for n in deq if got[n.input[0]].shape == conv_w.shape
    )
    assert q.dtype == np.int8 and scale.shape == (conv_w.shape[0],)
    assert int(np.abs(q).max()) == 127
    back = q.astype(np.float32) * scale[:, None, None]
    assert np.all(np.abs(back - conv_w) <= scale[:, None, None] / 2 + 1e-7)


@pytest.mark.parametrize("kind", ["cnn", "tcn", "gru"])
def test_int8_scores_within_its_parity_limit_of_fp32(kind: str) -> None:
    fp32 = _fp32(kind, hidden=16, window=12, channels=3)
    int8 = variants.to_int8(fp32)
    x = np.random.default_rng(0).normal(size=(256, 12, 3)).astype(np.float32)
    sess = session(int8)
    # On CPU the builder turns the QDQ fusions off, so onnxruntime folds the weights.
    opts = sess.get_session_options()
    assert opts.get_session_config_entry("session.disable_quant_qdq") == "1"
    diff = float(np.max(np.abs(run(sess, x) - run(session(fp32), x))))
    assert 0 < diff <= 0.01  # outputs are fractions in [0, 1]
    assert len(int8) < 0.5 * len(fp32)


def _r(p50: float, rmse_ratio: float | None = 1.0, fit: bool = True) -> dict[str, object]:
    return {"p50_us": p50, "rmse_ratio": rmse_ratio, "within_accuracy": fit, "self_test": True}


def test_a_reduced_precision_runs_only_where_it_measured_faster() -> None:
    # INT8 a hair faster (within the tie) but less accurate: FP32 runs.
    tie = 30.0 / (1 + SPEED_TIE / 2)
    assert choose({"fp32": _r(30.0), "int8": _r(tie, 1.004)}) == "fp32"
    # INT8 clearly faster and within the limit: INT8 runs.
    assert choose({"fp32": _r(30.0), "int8": _r(20.0, 1.004)}) == "int8"
    # INT8 slower: FP32, however small INT8's accuracy cost.
    assert choose({"fp32": _r(30.0), "int8": _r(40.0, 1.0)}) == "fp32"
    # A reduced precision that scored a hair better on the holdout counts as FP32's
    # equal, not better: the faster of the two runs.
    assert choose({"fp32": _r(30.0), "int8": _r(29.5, 0.998)}) == "int8"
    assert choose({"fp32": _r(29.5), "int8": _r(30.0, 0.998)}) == "fp32"
    # Off its accuracy limit: never, however fast.
    assert choose({"fp32": _r(30.0), "int8": _r(5.0, 1.5, fit=False)}) == "fp32"
    # Within the tie, the more accurate of two reduced precisions.
    assert choose({"fp16": _r(20.0, 1.001), "int8": _r(19.5, 1.01), "fp32": _r(40.0)}) == "fp16"
    # A variant without a recorded accuracy counts as FP32's.
    assert choose({"fp32_b1": _r(25.0, None), "fp32": _r(30.0)}) == "fp32_b1"
