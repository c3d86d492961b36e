"""torch → ONNX, with the parity check that gates it.

Used where a model is registered (the registry holds ONNX, loadable anywhere without the
training code). Sessions come from :mod:`pumpfleet.runtime`, the one builder.
"""

from __future__ import annotations

import io
import logging
import warnings
from typing import Any

import numpy as np

from pumpfleet.errors import ParityError
from pumpfleet.runtime import INPUT, OUTPUT, run, session

log = logging.getLogger(__name__)

OPSET = 17  # accepted by current Jetson TensorRT releases
PARITY_ATOL = 1e-5


def parity_atol(model: Any) -> float:
    """The largest ONNX-vs-framework difference a model is allowed: 1e-5, or the model's
    own ``parity_atol`` (float32 trees, :mod:`pumpfleet.boosting`)."""
    return float(getattr(model, "parity_atol", PARITY_ATOL))


def to_onnx(model: Any, window: int, n_channels: int) -> bytes:
    """Export a windows → scores model to ONNX with a dynamic batch dimension (a model
    with its own ``export_onnx``, the boosted trees, builds its graph itself)."""
    import torch

    model.eval()
    own = getattr(model, "export_onnx", None)
    if callable(own):
        return bytes(own(window))
    example = torch.zeros(1, window, n_channels)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of dynamo, which takes ~10x
        # longer on these small models and needs onnxscript; both give the same graph.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            buf,  # type: ignore[arg-type]  # a file object works and saves a temp file
            input_names=[INPUT],
            output_names=[OUTPUT],
            dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    return buf.getvalue()


def check_parity(model: Any, onnx_bytes: bytes, x: np.ndarray, atol: float | None = None) -> float:
    """Max abs difference between torch and onnxruntime on windows ``x``; raises
    ParityError above ``atol`` (None: the model's own ``parity_atol``, else 1e-5)."""
    import torch

    atol = parity_atol(model) if atol is None else atol
    model.eval()
    with torch.no_grad():
        expected = model(torch.from_numpy(np.asarray(x, dtype=np.float32))).numpy()
    got = run(session(onnx_bytes), x)
    err = float(np.max(np.abs(expected - got))) if len(x) else 0.0
    if err > atol:
        raise ParityError(f"ONNX differs from torch by {err:.2e} (limit {atol:.0e})")
    return err
