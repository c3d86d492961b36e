"""The one onnxruntime session builder and runner, for every side: the registry's and
evaluation's checks, the Serve replicas, the edge export and the device.

onnxruntime only (imported where a session is made), so the device can import it. Which
execution providers a device asks for (TensorRT with its engine cache, CUDA) is the
device's choice (``edge_agent.model.providers``); the session itself is made here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

# The graph's input and output names, fixed at export (``pumpfleet.onnx_io.to_onnx``).
INPUT = "window"
OUTPUT = "scores"
CPU = "CPUExecutionProvider"

# Scores feature windows ``[N, W, C]`` (float32) into model outputs ``[N, K]``: an
# onnxruntime session through :func:`runner`, a TensorRT engine, or a test's fake.
Runner = Callable[[np.ndarray], np.ndarray]


def session(onnx_bytes: bytes, threads: int = 1, providers: Sequence[Any] | None = None) -> Any:
    """An onnxruntime session of ``onnx_bytes`` on ``providers`` (CPU alone by default,
    so no CUDA provider is tried and warned about), ``threads`` intra-op threads."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    chosen = list(providers or [CPU])
    if chosen[0] == CPU:
        # Weight-only int8 graphs (edge_export.variants.to_int8) keep their weights as
        # int8 read through DequantizeLinear; with its QDQ fusions off, onnxruntime folds
        # those into float32 weights once, at load, instead of dequantising every call.
        # No graph the product makes quantises activations, which is what they fuse.
        opts.add_session_config_entry("session.disable_quant_qdq", "1")
    return ort.InferenceSession(onnx_bytes, opts, providers=chosen)


def run(sess: Any, x: np.ndarray) -> np.ndarray:
    """One call of the session on feature windows ``x``."""
    return np.asarray(sess.run([OUTPUT], {INPUT: np.ascontiguousarray(x, dtype=np.float32)})[0])


def runner(sess: Any, batch: int | None = None) -> Runner:
    """The session as a :data:`Runner`; ``batch`` windows a call for a graph whose batch
    dimension is fixed (None: all at once)."""

    def score(x: np.ndarray) -> np.ndarray:
        if batch is None or len(x) <= batch:
            return run(sess, x)
        return np.concatenate([run(sess, x[i : i + batch]) for i in range(0, len(x), batch)])

    return score


def provider_of(sess: Any) -> str:
    """The execution provider a session runs on first."""
    return str(sess.get_providers()[0])


def onnx_runner(onnx_bytes: bytes, threads: int = 1) -> Runner:
    """A CPU session of ``onnx_bytes`` as a :data:`Runner`."""
    return runner(session(onnx_bytes, threads))
