"""The baseline of ``benchmarks.serve_load``: the same ONNX model and the same feature code
behind one plain FastAPI app, no Ray. Run by uvicorn with ``--workers 2``:

    PLAIN_MODEL_DIR=DIR uvicorn benchmarks.plain_app:app --workers 2

``DIR`` holds ``model.onnx`` and ``feature_spec.json``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

from pumpfleet import runtime
from pumpfleet.errors import InputError
from pumpfleet.features import FeatureSpec, decode_outputs, readings_to_window, window_features

_DIR = Path(os.environ.get("PLAIN_MODEL_DIR", "."))
Reading = Annotated[float | None, Field(allow_inf_nan=False)]


class ScoreRequest(BaseModel):
    pump_id: str = Field(min_length=1, max_length=128)
    pump_class: str
    readings: dict[str, list[Reading]]


class BatchRequest(BaseModel):
    items: list[ScoreRequest] = Field(min_length=1, max_length=10_000)


app = FastAPI(title="plain scoring baseline")
# Loaded once per worker process, before it takes a request.
_spec = FeatureSpec.from_json((_DIR / "feature_spec.json").read_text())
_sess = runtime.session((_DIR / "model.onnx").read_bytes())


def _score(reqs: list[ScoreRequest]) -> list[dict[str, Any]]:
    spec, sess = _spec, _sess
    try:
        raw = np.stack([readings_to_window(r.readings, spec) for r in reqs])
    except InputError as e:
        raise HTTPException(422, str(e)) from None
    rul, prob = decode_outputs(runtime.run(sess, window_features(raw, spec)), spec)
    return [
        {
            "pump_id": r.pump_id,
            "pump_class": r.pump_class,
            "rul_hours": float(rul[i]),
            "failure_probability": float(prob[i]),
            "alert": bool(prob[i] >= spec.alert_threshold),
        }
        for i, r in enumerate(reqs)
    ]


@app.post("/v1/score")
def score(req: ScoreRequest) -> dict[str, Any]:
    return _score([req])[0]


@app.post("/v1/score/batch")
def score_batch(req: BatchRequest) -> dict[str, Any]:
    return {"results": _score(req.items), "errors": []}


@app.get("/-/healthz")
def healthz() -> str:
    """What HAProxy checks with Serve's configuration (``benchmarks.door_log``)."""
    return "success"
