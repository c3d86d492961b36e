"""The cloud scoring service on Ray Serve.

One ingress deployment holds, per pump class, the champion and the challenger (ONNX on
onnxruntime) and decides the arm itself: every hop through a DeploymentHandle costs more
than these models do (STACK.md, "Serving on 2 cores").

    serve run serve_apps.scoring:build_app tracking_uri=sqlite:///... predictions_dir=...

A class with a health (anomaly) model at ``pumpfleet-<class>-anomaly@champion`` also gets,
for every window, its health score (0 typical, 1 at the alarm threshold) and anomaly flag,
from :class:`pumpfleet.health.HealthSpec` as the edge computes them.

Scoring needs an API key (``X-API-Key``), the admin routes a bearer token; only the keys'
digests are in the config (``serve_apps/security.py``).
"""

import logging
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ray import serve
from ray.serve import Application
from ray.util import metrics

from pumpfleet import explain, records, runtime
from pumpfleet.edge_ingest import EdgeUpload, handle_upload
from pumpfleet.errors import InputError, RegistryError
from pumpfleet.features import (
    FeatureSpec,
    readings_to_window,
    window_summary,
)
from pumpfleet.predlog import PredictionLog
from pumpfleet.registry import (
    CHALLENGER,
    CHAMPION,
    STAGING,
    Registry,
    anomaly_model_name,
    model_name,
)
from pumpfleet.routing import SHADOW_TAG, WEIGHT_TAG, Arm, assign_arm
from pumpfleet.scoring import HealthModel, Scores, score_windows
from serve_apps.security import API_KEY_HEADER, Access, check_admin, check_scoring

log = logging.getLogger(__name__)

MAX_WINDOW = 10_000
MAX_BATCH = 10_000
ARROW_STREAM = "application/vnd.apache.arrow.stream"
Reading = Annotated[float | None, Field(allow_inf_nan=False)]
# The A/B settings live as tags on each class's registered model (pumpfleet.routing), so
# that every replica (and a restarted one) serves the same split; replicas pick changes up
# within ``refresh_seconds``, the replica that took the admin call at once.
# 1970 to 2100: a time outside it is a client's mistake (and would overflow datetime64)
UnixTime = Annotated[float, Field(ge=0, le=4_102_444_800, allow_inf_nan=False)]


class ScoringConfig(BaseModel):
    """What the app serves, where it logs and who may call it; the typed argument of
    ``build_app``. Unknown fields are refused: a misspelt key in a Serve config would
    otherwise be dropped without a word."""

    model_config = ConfigDict(extra="forbid")

    tracking_uri: str
    predictions_dir: str
    challenger_weight: float = Field(default=0.2, ge=0.0, le=1.0)
    salt: str = "pumpfleet-ab-1"
    flush_seconds: float = Field(default=1.0, gt=0)
    num_cpus: float = Field(default=0.5, gt=0)
    num_replicas: int = Field(default=1, ge=1, le=256)
    # sha256 digests of the scoring keys and admin tokens (never the keys themselves)
    api_key_sha256: list[str] = Field(default_factory=list)
    admin_token_sha256: list[str] = Field(default_factory=list)
    insecure_dev: bool = False  # no keys needed: local development only
    max_body_bytes: int = Field(default=32 * 2**20, gt=0)
    # production serves champion and challenger; staging serves the ``staging`` alias only
    stage: Literal["production", "staging"] = "production"
    # how often each replica re-reads aliases and the split from the registry
    refresh_seconds: float = Field(default=5.0, gt=0)
    # the Ray job server (dashboard URL) that /v1/admin/retrain submits to; None: off
    jobs_address: str | None = None

    def aliases(self) -> dict[Arm, str]:
        if self.stage == "staging":
            return {Arm.CHAMPION: STAGING}
        return {Arm.CHAMPION: CHAMPION, Arm.CHALLENGER: CHALLENGER}

    def check(self) -> None:
        if not self.insecure_dev and not self.api_key_sha256:
            raise InputError(
                "no API keys: set PUMPFLEET_API_KEYS (or _FILE), or pass --insecure-dev"
            )


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pump_id: str = Field(min_length=1, max_length=128)
    pump_class: str
    readings: dict[str, Annotated[list[Reading], Field(min_length=1, max_length=MAX_WINDOW)]] = (
        Field(description="raw readings per channel over the window, oldest first; null = missing")
    )
    explain: bool = Field(
        default=False, description="also return per-channel and per-time-block attributions"
    )


class ScoreResponse(BaseModel):
    pump_id: str
    pump_class: str
    arm: str
    model_version: str
    rul_hours: float
    failure_probability: float
    alert: bool
    health_score: float | None = Field(
        default=None, description="0 typical, 1 at the alarm threshold; null: no health model"
    )
    anomaly: bool | None = Field(default=None, description="health score above 1")
    anomaly_version: str | None = None
    explanation: dict[str, Any] | None = None


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[dict[str, Any]] = Field(
        min_length=1, max_length=MAX_BATCH, description="score requests, as for /v1/score"
    )


class BatchResponse(BaseModel):
    results: list[ScoreResponse | None]
    errors: list[dict[str, Any]]


class SplitRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pump_class: str | None = Field(default=None, description="one class; all when absent")
    challenger_weight: float | None = Field(default=None, ge=0.0, le=1.0)
    shadow: bool | None = None


class RetrainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    classes: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = Field(
        default=None, min_length=1, description="classes to retrain; every served class if absent"
    )
    reason: str = Field(min_length=1, max_length=500, description="why; recorded with the job")
    epochs: int | None = Field(default=None, ge=1, le=1000)


class Feedback(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pump_id: str = Field(min_length=1, max_length=128)
    pump_class: str = Field(min_length=1, max_length=64)
    observed_at: UnixTime | None = Field(
        default=None, description="when the outcome was seen (unix seconds); now if absent"
    )
    failed_at: UnixTime | None = Field(default=None, description="failure time (unix seconds)")
    rul_hours: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None


class _Model:
    def __init__(self, version: str, onnx: bytes, spec: FeatureSpec) -> None:
        self.version = version
        self.spec = spec
        self.run = runtime.onnx_runner(onnx)


@dataclass
class _Class:
    """One class's models and its A/B settings."""

    arms: dict[Arm, _Model]
    weight: float
    shadow: bool = False
    versions: dict[str, str] = field(default_factory=dict)
    health: HealthModel | None = None


def _health_columns(health: HealthModel | None, scores: Scores, k: int) -> dict[str, list[Any]]:
    """The health score, flag and model version of ``k`` windows (None: not scored)."""
    scored = scores.health
    if health is None or scored is None:
        return {"health_score": [None] * k, "anomaly": [None] * k, "anomaly_version": [None] * k}
    return {
        "health_score": [
            float(x) if ok else None for x, ok in zip(scored.scores, scored.ok, strict=True)
        ],
        "anomaly": [bool(x) if ok else None for x, ok in zip(scored.flags, scored.ok, strict=True)],
        "anomaly_version": [health.version if ok else None for ok in scored.ok],
    }


app = FastAPI(title="pumpfleet scoring", version="1")


@app.exception_handler(RequestValidationError)
async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    # FastAPI echoes the offending input back, and a NaN in it cannot be written as
    # JSON (a 500): answer with where and what only.
    errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
    return JSONResponse(status_code=422, content={"detail": errors})


async def require_key(request: Request) -> None:
    """Scoring routes: a valid API key (``X-API-Key``). A dependency, so it runs before
    the body is parsed: an unauthenticated caller learns nothing about the schema."""
    c: ScoringConfig = request.app.state.config
    _deny(check_scoring(request.headers.get(API_KEY_HEADER), c.api_key_sha256, c.insecure_dev))


async def require_admin(request: Request) -> None:
    """Admin routes: the admin bearer token; a scoring key gets 403."""
    c: ScoringConfig = request.app.state.config
    _deny(
        check_admin(
            request.headers.get("authorization"),
            request.headers.get(API_KEY_HEADER),
            c.admin_token_sha256,
            c.api_key_sha256,
            c.insecure_dev,
        )
    )


SCORING = [Depends(require_key)]
ADMIN = [Depends(require_admin)]


class _BodyLimit:
    """413 before a large body is read, from its declared length (the batch route also
    checks what it actually read, for bodies sent without one). Plain ASGI: Starlette's
    function middleware costs a task and a stream per request."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        limit = getattr(app.state, "max_body_bytes", None)
        if scope["type"] == "http" and limit is not None:
            for name, value in scope["headers"]:
                if name == b"content-length":
                    if value.isdigit() and int(value) > limit:
                        body = {"detail": f"body over {limit} bytes"}
                        await JSONResponse(status_code=413, content=body)(scope, receive, send)
                        return
                    break
        await self.inner(scope, receive, send)


app.add_middleware(_BodyLimit)


def _unprocessable(field: str, msg: str) -> HTTPException:
    return HTTPException(status_code=422, detail=[{"loc": ["body", *field.split(".")], "msg": msg}])


def _deny(access: Access) -> None:
    if access is Access.MISSING:
        raise HTTPException(
            status_code=401,
            detail="missing or invalid credentials",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if access is Access.FORBIDDEN:
        raise HTTPException(status_code=403, detail="this key may not use admin routes")


_REQUESTS = metrics.Counter(
    "pumpfleet_scoring_requests",
    description="scored windows by class, arm and outcome",
    tag_keys=("pump_class", "arm", "outcome"),
)
_LATENCY = metrics.Histogram(
    "pumpfleet_scoring_latency_ms",
    description="time to score one request, by class and arm",
    boundaries=[0.5, 1, 2, 5, 10, 20, 50, 100, 250, 1000],
    tag_keys=("pump_class", "arm"),
)
_VERSION = metrics.Gauge(
    "pumpfleet_model_version",
    description="the model version serving each class and arm",
    tag_keys=("pump_class", "arm"),
)


# Module functions the deployment uses are defined above it: Serve pickles the class
# when it is decorated.
def _arrow_flat(column: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A list column as one float64 buffer (a null reading as NaN), each row's length (0
    for a null window) and which rows have a window."""
    flat = column.flatten().to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    valid = column.is_valid().to_numpy(zero_copy_only=False)
    lengths = np.where(valid, column.value_lengths().fill_null(0).to_numpy(), 0)
    return flat, lengths.astype(np.int64), valid


def _arrow_windows(column: Any) -> list[np.ndarray | None]:
    """Each row's window as float64 (a null reading as NaN; a null window as None), cut
    from one flat buffer: a Python loop over 24,000 values per 1,000 windows costs more
    than the model does."""
    flat, lengths, valid = _arrow_flat(column)
    ends = np.cumsum(lengths)
    return [flat[ends[i] - lengths[i] : ends[i]] if valid[i] else None for i in range(len(column))]


def _arrow_table(body: bytes) -> Any:
    """The request's Arrow table, its three columns checked (422 naming the column)."""
    import pyarrow as pa

    try:
        table = pa.ipc.open_stream(body).read_all()
    except (pa.ArrowInvalid, OSError) as e:
        raise _unprocessable("body", f"not an Arrow IPC stream ({e})") from None
    missing = [c for c in ("pump_id", "pump_class", "window") if c not in table.column_names]
    if missing:
        raise _unprocessable(missing[0], "column required in the Arrow batch")
    if table.num_rows == 0 or table.num_rows > MAX_BATCH:
        raise _unprocessable("window", f"expected 1 to {MAX_BATCH} rows, got {table.num_rows}")
    kind = table.schema.field("window").type
    listed = pa.types.is_list(kind) or pa.types.is_fixed_size_list(kind)
    if not listed or not (
        pa.types.is_floating(kind.value_type) or pa.types.is_integer(kind.value_type)
    ):
        raise _unprocessable("window", f"a list of numbers per row, not {kind}")
    return table


def _arrow_results(results: list[dict[str, Any] | None], errors: list[dict[str, Any]]) -> bytes:
    """The batch's answer as an Arrow IPC stream, one row per item in order."""
    import pyarrow as pa

    why = {e["index"]: f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors}
    fields = [k for k in ScoreResponse.model_fields if k != "explanation"]  # single only
    cols: dict[str, list[Any]] = {k: [] for k in fields}
    cols["error"] = []
    for i, r in enumerate(results):
        for k in fields:
            cols[k].append(None if r is None else r.get(k))
        cols["error"].append(why.get(i))
    # typed even where every value is null (a class with no health model)
    types = {"health_score": pa.float64(), "anomaly": pa.bool_(), "anomaly_version": pa.string()}
    table = pa.table({k: pa.array(v, types.get(k)) for k, v in cols.items()})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


@serve.deployment(
    name="PumpScorer",
    max_ongoing_requests=64,
    logging_config={"enable_access_log": False},
)
@serve.ingress(app)
class PumpScorer:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = ScoringConfig(**config)
        self.config.check()
        app.state.max_body_bytes = self.config.max_body_bytes
        app.state.config = self.config
        self.classes: dict[str, _Class] = {}
        self._registry = Registry(self.config.tracking_uri)
        self._state_lock = threading.Lock()  # one registry reload or split change at a time
        self._load()
        # Written by the flush thread every flush_seconds, not on the request path; a
        # request writes only when 20,000 rows wait (a stalled disk, a flood of batches).
        self.log = PredictionLog(self.config.predictions_dir, max_rows=20_000)
        self.feedback_log = PredictionLog(
            f"{self.config.predictions_dir.rstrip('/')}-feedback", to_table=records.feedback_table
        )
        self._shadow = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shadow")
        self._stop = threading.Event()
        self._flusher = threading.Thread(target=self._flush_loop, daemon=True)
        self._flusher.start()
        self._refresher = threading.Thread(target=self._refresh_loop, daemon=True)
        self._refresher.start()
        log.info("%s: serving classes %s", self.config.stage, sorted(self.classes))

    def _load(self) -> dict[str, dict[str, str]]:
        """(Re)load every class's models by alias and its split from the registry. The
        new set is swapped in at once, so a request in flight finishes on the models it
        started with; a model that cannot be loaded leaves the old one serving."""
        with self._state_lock:
            loaded: dict[str, _Class] = {}
            classes, with_health = self._registry.classes_by_kind()  # one request
            for cls in classes:
                aliases, tags = self._registry.model_state(model_name(cls))
                old = self.classes.get(cls)
                arms: dict[Arm, _Model] = {}
                for arm, alias in self.config.aliases().items():
                    version = aliases.get(alias)
                    if version is None:
                        continue
                    if old is not None and arm in old.arms and old.arms[arm].version == version:
                        arms[arm] = old.arms[arm]  # unchanged: keep the loaded session
                        continue
                    try:
                        m = self._registry.load_version(model_name(cls), version)
                        arms[arm] = _Model(m.version, m.onnx, m.spec)
                    except (RegistryError, OSError, ValueError) as e:
                        log.error("%s v%s could not be loaded: %s", cls, version, e)
                        if old is not None and arm in old.arms:
                            arms[arm] = old.arms[arm]
                if Arm.CHAMPION not in arms:
                    continue
                health = self._load_health(cls, old) if cls in with_health else None
                loaded[cls] = _Class(arms=arms, health=health, **self._split_of(tags, old))
                for arm, model in arms.items():
                    _VERSION.set(float(model.version), tags={"pump_class": cls, "arm": str(arm)})
            self.classes = loaded
            return self._versions()

    def _load_health(self, cls: str, old: _Class | None) -> HealthModel | None:
        """The class's health model at ``champion`` (the loaded one if unchanged; the old
        one if the new one cannot be loaded)."""
        name = anomaly_model_name(cls)
        before = old.health if old is not None else None
        version = self._registry.version_by_alias(name, CHAMPION)
        if version is None:
            return None
        if before is not None and before.version == version:
            return before
        try:
            m = self._registry.load_version(name, version)
            return m.health_model()
        except (RegistryError, OSError, ValueError, KeyError) as e:
            log.error("%s v%s could not be loaded: %s", name, version, e)
            return before

    def _split_of(self, tags: dict[str, str], old: _Class | None) -> dict[str, Any]:
        weight = self.config.challenger_weight if old is None else old.weight
        shadow = False if old is None else old.shadow
        try:
            weight = min(1.0, max(0.0, float(tags.get(WEIGHT_TAG, weight))))
        except ValueError:
            log.warning("ignoring the unreadable tag %s=%r", WEIGHT_TAG, tags[WEIGHT_TAG])
        shadow = tags.get(SHADOW_TAG, str(shadow)).lower() == "true"
        return {"weight": weight, "shadow": shadow}

    def _versions(self) -> dict[str, dict[str, str]]:
        return {
            cls: {str(a): m.version for a, m in c.arms.items()} for cls, c in self.classes.items()
        }

    def _flush_loop(self) -> None:
        while not self._stop.wait(self.config.flush_seconds):
            self.log.flush()
            self.feedback_log.flush()

    def _refresh_loop(self) -> None:
        """Follow the registry: promotions, rollbacks and split changes made elsewhere (an
        admin call on another replica, ``pumpfleet promote``) reach this replica too."""
        while not self._stop.wait(self.config.refresh_seconds):
            try:
                self._load()
            except Exception as e:  # the registry is down: keep serving what is loaded
                log.warning("registry refresh failed; serving what is loaded: %s", e)

    def __del__(self) -> None:  # graceful shutdown: nothing logged is lost
        self._stop.set()
        self._shadow.shutdown(wait=True)
        self.log.flush()
        self.feedback_log.flush()

    # --- access ------------------------------------------------------------------

    async def _body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.config.max_body_bytes:
            raise HTTPException(413, f"body over {self.config.max_body_bytes} bytes")
        body = await request.body()
        if len(body) > self.config.max_body_bytes:
            raise HTTPException(413, f"body over {self.config.max_body_bytes} bytes")
        return body

    # --- probes and listing --------------------------------------------------------

    @app.get("/healthz")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(self) -> JSONResponse:
        ready = bool(self.classes)
        body = {"ready": ready, "classes": sorted(self.classes)}
        return JSONResponse(status_code=200 if ready else 503, content=body)

    @app.get("/v1/models", dependencies=SCORING)
    def list_models(self, request: Request) -> dict[str, Any]:
        return {
            "stage": self.config.stage,
            "challenger_weight": self.config.challenger_weight,
            "classes": {
                cls: {
                    **{str(a): m.version for a, m in c.arms.items()},
                    "challenger_weight": c.weight,
                    "shadow": c.shadow,
                    "anomaly": c.health.version if c.health else None,
                }
                for cls, c in self.classes.items()
            },
        }

    # --- scoring -------------------------------------------------------------------

    def _route(self, req: ScoreRequest) -> tuple[_Class, Arm, _Model]:
        served = self.classes.get(req.pump_class)
        if served is None:
            known = ", ".join(sorted(self.classes)) or "none"
            raise InputError(f"pump_class: unknown or unserved class (served: {known})")
        if served.shadow:
            arm = Arm.CHAMPION  # the challenger scores everything, off the response path
        else:
            arm = assign_arm(req.pump_id, served.weight, self.config.salt)
        if arm not in served.arms:
            arm = Arm.CHAMPION
        return served, arm, served.arms[arm]

    @staticmethod
    def _window(req: ScoreRequest, model: _Model) -> np.ndarray:
        unknown = sorted(set(req.readings) - model.spec.accepted)
        if unknown:
            raise InputError(f"readings.{unknown[0]}: not a channel or setting of {req.pump_class}")
        return readings_to_window(req.readings, model.spec)

    @staticmethod
    def _score_many(model: _Model, raw: np.ndarray, health: HealthModel | None = None) -> Scores:
        """Windows of one arm through the one scoring path, with the class's health model."""
        return score_windows(raw, model.spec, model.run, health)

    def _respond(
        self,
        reqs: list[ScoreRequest],
        served: _Class,
        arm: Arm,
        model: _Model,
        raw: np.ndarray,  # the windows [N, W, C + S]
        scores: Scores,
        started: float,
    ) -> list[dict[str, Any]]:
        """The responses to windows scored together by one model, and their log rows
        (the challenger's shadow scores are added off the response path)."""
        latency = (time.perf_counter() - started) * 1000.0
        cls = reqs[0].pump_class
        now = np.datetime64(time.time_ns(), "ns")
        summary = {f"in_{c}": v for c, v in window_summary(raw, model.spec).items()}
        health = _health_columns(served.health, scores, len(reqs))
        rul, prob, alert = scores.rul.rul_hours, scores.rul.failure_probability, scores.rul.alert
        responses, rows = [], []
        for j, req in enumerate(reqs):
            r, p = float(rul[j]), float(prob[j])
            own = {k: v[j] for k, v in health.items()}
            responses.append(
                {
                    "pump_id": req.pump_id,
                    "pump_class": cls,
                    "arm": str(arm),
                    "model_version": model.version,
                    "rul_hours": r,
                    "failure_probability": p,
                    "alert": bool(alert[j]),
                    **own,
                }
            )
            rows.append(
                {
                    "request_id": uuid.uuid4().hex,
                    "timestamp": now,
                    "pump_id": req.pump_id,
                    "pump_class": cls,
                    "arm": str(arm),
                    "model_version": model.version,
                    "rul_hours": r,
                    "failure_probability": p,
                    "latency_ms": latency,
                    "shadow_version": None,
                    "shadow_rul_hours": None,
                    "shadow_failure_probability": None,
                    **own,
                    **{k: float(v[j]) for k, v in summary.items()},
                }
            )
        tags = {"pump_class": cls, "arm": str(arm)}
        _REQUESTS.inc(len(reqs), tags={**tags, "outcome": "ok"})
        _LATENCY.observe(latency, tags=tags)
        challenger = served.arms.get(Arm.CHALLENGER)
        if served.shadow and challenger is not None:
            self._shadow.submit(self._shadow_score, reqs, raw, model, challenger, rows)
        else:
            self.log.extend(rows)
        return responses

    def _shadow_score(
        self,
        reqs: list[ScoreRequest],
        raw: np.ndarray,
        champion: _Model,
        challenger: _Model,
        rows: list[dict[str, Any]],
    ) -> None:
        """The challenger's scores of shadowed requests, logged beside the champion's."""
        try:
            same = challenger.spec.inputs == champion.spec.inputs
            if same and challenger.spec.window == champion.spec.window:
                windows = raw
            else:  # its own inputs: from each request's readings
                windows = np.stack([readings_to_window(r.readings, challenger.spec) for r in reqs])
            shadow = self._score_many(challenger, windows).rul
            for j, row in enumerate(rows):
                row |= {
                    "shadow_version": challenger.version,
                    "shadow_rul_hours": float(shadow.rul_hours[j]),
                    "shadow_failure_probability": float(shadow.failure_probability[j]),
                }
        except Exception as e:  # the responses are sent; the log says what went wrong
            log.warning("shadow scoring of %d windows failed: %s", len(rows), e)
        self.log.extend(rows)

    @app.post("/v1/score", dependencies=SCORING)
    async def score(self, req: ScoreRequest, request: Request) -> ScoreResponse:
        # async: well under a millisecond of work, run on the replica's event loop
        # rather than through a thread pool hop (measured in benchmarks/serve_load.py)
        started = time.perf_counter()
        try:
            served, arm, model = self._route(req)
            raw = self._window(req, model)
        except InputError as e:
            field_, _, msg = str(e).partition(": ")
            _REQUESTS.inc(tags={"pump_class": "?", "arm": "?", "outcome": "rejected"})
            raise _unprocessable(field_, msg) from None
        scores = self._score_many(model, raw[None], served.health)
        (out,) = self._respond([req], served, arm, model, raw[None], scores, started)
        if req.explain:  # occlusion with the served model: what the edge would say too
            score = explain.rul_scorer(model.run, model.spec)
            out["explanation"] = explain.occlusion(score, raw, model.spec).as_dict()
        return ScoreResponse.model_construct(**out)

    @app.post(
        "/v1/score/batch",
        response_model=BatchResponse,
        dependencies=SCORING,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": BatchRequest.model_json_schema()},
                    ARROW_STREAM: {"schema": {"type": "string", "format": "binary"}},
                },
            }
        },
    )
    async def score_batch(self, request: Request) -> Response:
        """Many windows in one request, as JSON (``{"items": [...]}``) or as an Arrow IPC
        stream (columns ``pump_id``, ``pump_class``, ``window``: each window's values
        time-major in the order of the model's inputs). Bad items are reported by index;
        the rest are scored. With ``accept: application/vnd.apache.arrow.stream`` the
        answer is an Arrow IPC stream too (one row per item, ``error`` set on bad ones)."""
        started = time.perf_counter()
        body = await self._body(request)
        ctype = request.headers.get("content-type", "").split(";")[0].strip()
        want_arrow = ARROW_STREAM in request.headers.get("accept", "")
        if ctype == ARROW_STREAM:
            fast = self._score_arrow(body, started, want_arrow)
            if fast is not None:
                return fast
            items, errors = self._arrow_items(body)
        else:
            items, errors = self._json_items(body)
        results: list[dict[str, Any] | None] = [None] * (len(items) + len(errors))
        groups: dict[tuple[str, Arm], list[tuple[int, ScoreRequest, np.ndarray]]] = {}
        for i, req, raw in items:
            try:
                served, arm, model = self._route(req)
                if raw is None:
                    window = self._window(req, model)
                else:  # Arrow: flat, time-major in the order of the model's inputs
                    shape = (model.spec.window, len(model.spec.inputs))
                    if raw.size != shape[0] * shape[1]:
                        raise InputError(
                            f"window: expected {shape[0]} x {shape[1]} values "
                            f"({', '.join(model.spec.inputs)}), got {raw.size}"
                        )
                    window = raw.reshape(shape)
            except InputError as e:
                field_, _, msg = str(e).partition(": ")
                errors.append({"index": i, "loc": field_.split("."), "msg": msg})
                continue
            groups.setdefault((req.pump_class, arm), []).append((i, req, window))
        for (cls, arm), members in groups.items():
            served = self.classes[cls]
            model = served.arms[arm]
            stacked = np.stack([w for _, _, w in members])
            scores = self._score_many(model, stacked, served.health)
            reqs = [req for _, req, _ in members]
            out = self._respond(reqs, served, arm, model, stacked, scores, started)
            for (i, _, _), r in zip(members, out, strict=True):
                results[i] = r
        if len(results) == 0 or all(r is None for r in results):
            raise HTTPException(422, detail={"msg": "no item could be scored", "errors": errors})
        errors.sort(key=lambda e: e["index"])
        if want_arrow:
            return Response(_arrow_results(results, errors), media_type=ARROW_STREAM)
        return JSONResponse({"results": results, "errors": errors})

    @staticmethod
    def _json_items(
        body: bytes,
    ) -> tuple[list[tuple[int, ScoreRequest, Any]], list[dict[str, Any]]]:
        try:
            batch = BatchRequest.model_validate_json(body)
        except ValidationError as e:
            detail = [{"loc": ["body", *e_["loc"]], "msg": e_["msg"]} for e_ in e.errors()]
            raise HTTPException(422, detail=detail) from None
        items, errors = [], []
        for i, raw in enumerate(batch.items):
            try:
                items.append((i, ScoreRequest.model_validate(raw), None))
            except ValidationError as e:
                first = e.errors()[0]
                errors.append({"index": i, "loc": list(first["loc"]), "msg": first["msg"]})
        return items, errors

    @staticmethod
    def _arrow_items(
        body: bytes,
    ) -> tuple[list[tuple[int, ScoreRequest, Any]], list[dict[str, Any]]]:
        table = _arrow_table(body)
        ids = table.column("pump_id").to_pylist()
        classes = table.column("pump_class").to_pylist()
        windows = _arrow_windows(table.column("window").combine_chunks())
        items, errors = [], []
        for i, (pid, cls) in enumerate(zip(ids, classes, strict=True)):
            w = windows[i]
            if not pid or not cls or w is None:
                msg = "pump_id, pump_class and window required"
                errors.append({"index": i, "loc": ["pump_id"], "msg": msg})
                continue
            if np.isinf(w).any():
                errors.append({"index": i, "loc": ["window"], "msg": "inf is not a reading"})
                continue
            req = ScoreRequest.model_construct(pump_id=str(pid), pump_class=str(cls), readings={})
            items.append((i, req, w))
        return items, errors

    def _score_arrow(self, body: bytes, started: float, want_arrow: bool) -> Response | None:
        """An Arrow batch scored column-wise: windows gathered from one buffer, each
        (class, arm) group scored in one call and logged as one table. None when a class
        in the batch is in shadow mode (the row-wise path handles that)."""
        import pyarrow as pa

        table = _arrow_table(body)
        n = table.num_rows
        ids = table.column("pump_id").to_pylist()
        classes = table.column("pump_class").to_pylist()
        if any(c in self.classes and self.classes[c].shadow for c in set(classes)):
            return None
        flat, lengths, valid = _arrow_flat(table.column("window").combine_chunks())
        starts = np.cumsum(lengths) - lengths
        error: list[tuple[str, str] | None] = [None] * n
        has_inf = np.zeros(n, dtype=bool)
        inf = np.isinf(flat)
        if inf.any():
            has_inf[np.repeat(np.arange(n), lengths)[inf]] = True
        for i in range(n):
            if not ids[i] or not classes[i] or not valid[i]:
                error[i] = ("pump_id", "pump_id, pump_class and window required")
            elif has_inf[i]:
                error[i] = ("window", "inf is not a reading")
        arm_of = np.full(n, None, dtype=object)
        version = np.full(n, None, dtype=object)
        rul = np.full(n, np.nan)
        prob = np.full(n, np.nan)
        alert = np.full(n, None, dtype=object)
        health_score = np.full(n, np.nan)
        anomaly = np.full(n, None, dtype=object)
        anomaly_version = np.full(n, None, dtype=object)
        by_class: dict[str, list[int]] = {}
        for i in range(n):
            if error[i] is None:
                by_class.setdefault(str(classes[i]), []).append(i)
        for cls, rows in by_class.items():
            served = self.classes.get(cls)
            if served is None:
                known = ", ".join(sorted(self.classes)) or "none"
                for i in rows:
                    error[i] = ("pump_class", f"unknown or unserved class (served: {known})")
                continue
            arms: dict[Arm, list[int]] = {}
            for i in rows:
                arm = assign_arm(str(ids[i]), served.weight, self.config.salt)
                arms.setdefault(arm if arm in served.arms else Arm.CHAMPION, []).append(i)
            for arm, members in arms.items():
                model = served.arms[arm]
                w, f = model.spec.window, len(model.spec.inputs)
                idx = np.asarray(members)
                fits = lengths[idx] == w * f
                names = ", ".join(model.spec.inputs)
                for i in idx[~fits]:
                    error[i] = ("window", f"expected {w} x {f} values ({names}), got {lengths[i]}")
                idx = idx[fits]
                if len(idx) == 0:
                    continue
                windows = flat[starts[idx][:, None] + np.arange(w * f)].reshape(-1, w, f)
                scores = self._score_many(model, windows, served.health)
                r, p = scores.rul.rul_hours, scores.rul.failure_probability
                arm_of[idx], version[idx], rul[idx], prob[idx] = str(arm), model.version, r, p
                alert[idx] = list(scores.rul.alert)
                health = _health_columns(served.health, scores, len(idx))
                if scores.health is not None:
                    health_score[idx] = [np.nan if v is None else v for v in health["health_score"]]
                    anomaly[idx] = health["anomaly"]
                    anomaly_version[idx] = health["anomaly_version"]
                ids_ = [str(ids[i]) for i in idx]
                self._log_table(cls, arm, model, ids_, windows, r, p, health, started)
        scored = np.array([e is None for e in error])
        if not scored.any():
            errs = [
                {"index": i, "loc": e[0].split("."), "msg": e[1]} for i, e in enumerate(error) if e
            ]
            raise HTTPException(422, detail={"msg": "no item could be scored", "errors": errs})
        errors = [
            {"index": i, "loc": e[0].split("."), "msg": e[1]} for i, e in enumerate(error) if e
        ]
        if want_arrow:
            out = pa.table(
                {
                    "pump_id": [str(x) if x is not None else None for x in ids],
                    "pump_class": [
                        str(c) if ok else None for c, ok in zip(classes, scored, strict=True)
                    ],
                    "arm": pa.array(arm_of, pa.string()),
                    "model_version": pa.array(version, pa.string()),
                    "rul_hours": pa.array(np.where(scored, rul, np.nan), mask=~scored),
                    "failure_probability": pa.array(prob, mask=~scored),
                    "alert": pa.array(alert, pa.bool_()),
                    "health_score": pa.array(health_score, mask=np.isnan(health_score)),
                    "anomaly": pa.array(anomaly, pa.bool_()),
                    "anomaly_version": pa.array(anomaly_version, pa.string()),
                    "error": [None if e is None else f"{e[0]}: {e[1]}" for e in error],
                }
            )
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, out.schema) as writer:
                writer.write_table(out)
            return Response(bytes(sink.getvalue().to_pybytes()), media_type=ARROW_STREAM)
        results = [
            {
                "pump_id": str(ids[i]),
                "pump_class": str(classes[i]),
                "arm": arm_of[i],
                "model_version": version[i],
                "rul_hours": float(rul[i]),
                "failure_probability": float(prob[i]),
                "alert": bool(alert[i]),
                "health_score": None if np.isnan(health_score[i]) else float(health_score[i]),
                "anomaly": anomaly[i],
                "anomaly_version": anomaly_version[i],
            }
            if scored[i]
            else None
            for i in range(n)
        ]
        return JSONResponse({"results": results, "errors": errors})

    def _log_table(
        self,
        cls: str,
        arm: Arm,
        model: _Model,
        ids: list[str],
        windows: np.ndarray,
        rul: np.ndarray,
        prob: np.ndarray,
        health: dict[str, list[Any]],
        started: float,
    ) -> None:
        """One group's prediction-log rows as a table (the columns of _respond's rows)."""
        import pyarrow as pa

        k = len(ids)
        batch = uuid.uuid4().hex
        latency = (time.perf_counter() - started) * 1000.0
        summary = window_summary(windows, model.spec)
        cols: dict[str, Any] = {
            "request_id": [f"{batch}-{j}" for j in range(k)],
            "timestamp": pa.array(np.full(k, time.time_ns(), dtype="datetime64[ns]")),
            "pump_id": ids,
            "pump_class": [cls] * k,
            "arm": [str(arm)] * k,
            "model_version": [model.version] * k,
            "rul_hours": pa.array(rul, pa.float64()),
            "failure_probability": pa.array(prob, pa.float64()),
            "latency_ms": pa.array(np.full(k, latency)),
            "shadow_version": pa.nulls(k, pa.string()),
            "shadow_rul_hours": pa.nulls(k, pa.float64()),
            "shadow_failure_probability": pa.nulls(k, pa.float64()),
            "health_score": pa.array(health["health_score"], pa.float64()),
            "anomaly": pa.array(health["anomaly"], pa.bool_()),
            "anomaly_version": pa.array(health["anomaly_version"], pa.string()),
            **{f"in_{c}": pa.array(v, pa.float64()) for c, v in summary.items()},
        }
        self.log.extend_table(records.to_table(cols, k))
        tags = {"pump_class": cls, "arm": str(arm)}
        _REQUESTS.inc(k, tags={**tags, "outcome": "ok"})
        _LATENCY.observe(latency, tags=tags)

    # --- feedback --------------------------------------------------------------------

    @app.post("/v1/feedback", dependencies=SCORING)
    def feedback(self, fb: Feedback, request: Request) -> dict[str, Any]:
        """An observed outcome (a failure time, or a RUL seen in hindsight), logged for the
        realised online metrics of each arm."""
        if fb.failed_at is None and fb.rul_hours is None:
            raise _unprocessable("failed_at", "give failed_at or rul_hours")
        self.feedback_log.append(
            {
                "pump_id": fb.pump_id,
                "pump_class": fb.pump_class,
                "observed_at": np.datetime64(int((fb.observed_at or time.time()) * 1e9), "ns"),
                "failed_at": (
                    None if fb.failed_at is None else np.datetime64(int(fb.failed_at * 1e9), "ns")
                ),
                "rul_hours": fb.rul_hours,
            }
        )
        return {"accepted": 1}

    # --- edge uploads -----------------------------------------------------------------

    @app.post("/v1/edge/upload", dependencies=SCORING)
    def edge_upload(self, up: EdgeUpload, request: Request) -> dict[str, Any]:
        """A device's predictions and alerts (store-and-forward from the edge agent),
        stored once per ``batch_key``: a batch sent again is acknowledged, not stored
        twice. They land beside the cloud's prediction log, for monitoring and retraining."""
        root = self.config.predictions_dir
        if "://" in root:
            raise HTTPException(503, "edge uploads need predictions_dir on a shared filesystem")
        try:
            return handle_upload(Path(root), up.model_dump())
        except InputError as e:
            raise HTTPException(422, detail=[{"loc": ["body"], "msg": str(e)}]) from None

    # --- admin ---------------------------------------------------------------------

    @app.post("/v1/admin/split", dependencies=ADMIN)
    def split(self, change: SplitRequest, request: Request) -> dict[str, Any]:
        """Set the challenger's weight and shadow mode, for one class or all, live. The
        setting is stored on the registered model, so every replica follows it."""
        if self.config.stage != "production":
            raise _unprocessable("pump_class", "the staging app serves no A/B split")
        if change.pump_class is not None and change.pump_class not in self.classes:
            raise _unprocessable("pump_class", "unknown or unserved class")
        targets = [change.pump_class] if change.pump_class else list(self.classes)
        tags: dict[str, Any] = {}
        if change.challenger_weight is not None:
            tags[WEIGHT_TAG] = change.challenger_weight
        if change.shadow is not None:
            tags[SHADOW_TAG] = str(change.shadow).lower()
        with self._state_lock:
            for cls in targets:
                self._registry.set_model_tags(model_name(cls), tags)
                c = self.classes[cls]
                if change.challenger_weight is not None:
                    c.weight = change.challenger_weight
                if change.shadow is not None:
                    c.shadow = change.shadow
        log.info("split changed: %s", change.model_dump(exclude_none=True))
        return {
            cls: {"challenger_weight": c.weight, "shadow": c.shadow}
            for cls, c in self.classes.items()
        }

    @app.post("/v1/admin/retrain", dependencies=ADMIN)
    def retrain(self, req: RetrainRequest, request: Request) -> dict[str, Any]:
        """Submit the retraining Ray job (``ray_jobs/retrain.py``) for some classes or all;
        returns its submission id. The job trains challengers and gates them; it does not
        promote."""
        unknown = sorted(set(req.classes or []) - set(self.classes))
        if unknown:
            raise _unprocessable("classes", f"unknown or unserved class {unknown[0]!r}")
        if not self.config.jobs_address:
            raise HTTPException(
                503, "retraining is not configured: no Ray job server (PUMPFLEET_JOBS_ADDRESS)"
            )
        from pumpfleet.job_options import RetrainOptions, submit_retrain

        options = RetrainOptions(classes=req.classes, reason=req.reason, epochs=req.epochs)
        try:
            job_id = submit_retrain(
                self.config.jobs_address, options, os.environ.get("RAY_AUTH_TOKEN")
            )
        except Exception as e:  # the job server is down or refused: say so, not a 500
            log.error("retrain submission to %s failed: %s", self.config.jobs_address, e)
            raise HTTPException(503, f"the Ray job server did not take the job: {e}") from None
        log.info("retrain job %s submitted: %s", job_id, req.reason)
        return {"job_id": job_id, "classes": req.classes or sorted(self.classes)}

    @app.post("/v1/admin/reload", dependencies=ADMIN)
    def reload(self, request: Request) -> dict[str, Any]:
        """Pick up alias changes (a promotion, a rollback) without a restart."""
        return {"classes": self._load()}


def build_app(args: ScoringConfig) -> Application:
    """The app builder ``serve run`` / ``serve deploy`` and ``pumpfleet serve`` share."""
    args.check()
    return PumpScorer.options(  # type: ignore[attr-defined]
        ray_actor_options={"num_cpus": args.num_cpus}, num_replicas=args.num_replicas
    ).bind(args.model_dump())
