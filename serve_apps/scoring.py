"""The cloud scoring service on Ray Serve.

One ingress deployment holds, per pump class, the champion and the challenger (ONNX on
onnxruntime) and decides the arm itself: every hop through a DeploymentHandle costs more
than these models do (STACK.md, "Serving on 2 cores").

    serve run serve_apps.scoring:build_app tracking_uri=sqlite:///...
"""

import logging
import threading
import time
import uuid
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from ray import serve
from ray.serve import Application

from pumpfleet import onnx_io
from pumpfleet.errors import InputError, RegistryError
from pumpfleet.features import (
    FeatureSpec,
    decode_outputs,
    readings_to_window,
    window_features,
    window_summary,
)
from pumpfleet.predlog import PredictionLog
from pumpfleet.registry import CHALLENGER, CHAMPION, Registry, model_name
from pumpfleet.routing import Arm, assign_arm

log = logging.getLogger(__name__)

MAX_WINDOW = 10_000
Reading = Annotated[float | None, Field(allow_inf_nan=False)]


class ScoringConfig(BaseModel):
    """What the app serves and where it logs; the typed argument of ``build_app``."""

    tracking_uri: str
    predictions_dir: str
    challenger_weight: float = Field(default=0.2, ge=0.0, le=1.0)
    salt: str = "pumpfleet-ab-1"
    flush_seconds: float = Field(default=1.0, gt=0)
    num_cpus: float = Field(default=0.5, gt=0)


class ScoreRequest(BaseModel):
    pump_id: str = Field(min_length=1, max_length=128)
    pump_class: str
    readings: dict[str, Annotated[list[Reading], Field(min_length=1, max_length=MAX_WINDOW)]] = (
        Field(description="raw readings per channel over the window, oldest first; null = missing")
    )


class ScoreResponse(BaseModel):
    pump_id: str
    pump_class: str
    arm: str
    model_version: str
    rul_hours: float
    failure_probability: float
    alert: bool


class _Model:
    def __init__(self, version: str, onnx: bytes, spec: FeatureSpec) -> None:
        self.version = version
        self.spec = spec
        self.session = onnx_io.session(onnx)


app = FastAPI(title="pumpfleet scoring", version="1")


@app.exception_handler(RequestValidationError)
async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    # FastAPI echoes the offending input back, and a NaN in it cannot be written as
    # JSON (a 500): answer with where and what only.
    errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
    return JSONResponse(status_code=422, content={"detail": errors})


def _unprocessable(field: str, msg: str) -> HTTPException:
    return HTTPException(status_code=422, detail=[{"loc": ["body", *field.split(".")], "msg": msg}])


@serve.deployment(
    name="PumpScorer",
    max_ongoing_requests=64,
    logging_config={"enable_access_log": False},
)
@serve.ingress(app)
class PumpScorer:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = ScoringConfig(**config)
        registry = Registry(self.config.tracking_uri)
        self.arms: dict[str, dict[Arm, _Model]] = {}
        for cls in registry.classes():
            arms: dict[Arm, _Model] = {}
            for arm, alias in ((Arm.CHAMPION, CHAMPION), (Arm.CHALLENGER, CHALLENGER)):
                try:
                    m = registry.load(model_name(cls), alias)
                except RegistryError:
                    continue
                arms[arm] = _Model(m.version, m.onnx, m.spec)
            if Arm.CHAMPION in arms:
                self.arms[cls] = arms
        self.log = PredictionLog(self.config.predictions_dir)
        self._stop = threading.Event()
        self._flusher = threading.Thread(target=self._flush_loop, daemon=True)
        self._flusher.start()
        log.info("serving classes %s", sorted(self.arms))

    def _flush_loop(self) -> None:
        while not self._stop.wait(self.config.flush_seconds):
            self.log.flush()

    def __del__(self) -> None:  # graceful shutdown: nothing logged is lost
        self._stop.set()
        self.log.flush()

    @app.get("/healthz")
    def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    def list_models(self) -> dict[str, Any]:
        return {
            "challenger_weight": self.config.challenger_weight,
            "classes": {
                cls: {str(arm): m.version for arm, m in arms.items()}
                for cls, arms in self.arms.items()
            },
        }

    @app.post("/v1/score")
    def score(self, req: ScoreRequest) -> ScoreResponse:
        started = time.perf_counter()
        arms = self.arms.get(req.pump_class)
        if arms is None:
            known = ", ".join(sorted(self.arms)) or "none"
            raise _unprocessable("pump_class", f"unknown or unserved class (served: {known})")
        arm = assign_arm(req.pump_id, self.config.challenger_weight, self.config.salt)
        model = arms.get(arm) or arms[Arm.CHAMPION]
        if arm not in arms:
            arm = Arm.CHAMPION
        unknown = sorted(set(req.readings) - model.spec.accepted)
        if unknown:
            raise _unprocessable(
                f"readings.{unknown[0]}", f"not a channel or setting of {req.pump_class}"
            )
        try:
            raw = readings_to_window(req.readings, model.spec)
        except InputError as e:
            field, _, msg = str(e).partition(": ")
            raise _unprocessable(field, msg) from None
        out = onnx_io.run(model.session, window_features(raw[None], model.spec))
        rul, prob = decode_outputs(out, model.spec)
        response = ScoreResponse(
            pump_id=req.pump_id,
            pump_class=req.pump_class,
            arm=str(arm),
            model_version=model.version,
            rul_hours=float(rul[0]),
            failure_probability=float(prob[0]),
            alert=bool(prob[0] >= model.spec.alert_threshold),
        )
        summary = window_summary(raw[None], model.spec)
        self.log.append(
            {
                "request_id": uuid.uuid4().hex,
                "timestamp": np.datetime64(time.time_ns(), "ns"),
                "pump_id": req.pump_id,
                "pump_class": req.pump_class,
                "arm": str(arm),
                "model_version": model.version,
                "rul_hours": response.rul_hours,
                "failure_probability": response.failure_probability,
                "latency_ms": (time.perf_counter() - started) * 1000.0,
                **{f"in_{c}": float(v[0]) for c, v in summary.items()},
            }
        )
        return response


def build_app(args: ScoringConfig) -> Application:
    """The app builder ``serve run`` / ``serve deploy`` and ``pumpfleet serve`` share."""
    return PumpScorer.options(  # type: ignore[attr-defined]
        ray_actor_options={"num_cpus": args.num_cpus}
    ).bind(args.model_dump())
