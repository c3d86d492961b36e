"""The cloud scoring service on Ray Serve: the deployment, its routes and its app builder.

One ingress deployment holds, per pump class, the champion and the challenger (ONNX on
onnxruntime) and decides the arm itself: every hop through a DeploymentHandle costs more
than these models do (STACK.md, "Serving on 2 cores").

    serve run serve_apps.scoring:build_app tracking_uri=sqlite:///... predictions_dir=...

A class with a health (anomaly) model at ``pumpfleet-<class>-anomaly@champion`` also gets,
for every window, its health score (0 typical, 1 at the alarm threshold) and anomaly flag,
from :class:`pumpfleet.health.HealthSpec` as the edge computes them.

Scoring needs an API key (``X-API-Key``), the admin routes a bearer token; only the keys'
digests are in the config (``serve_apps/security.py``).

The parts: ``schemas`` (bodies and the app's argument), ``model_set`` (the models per
class, refreshed from the registry, and routing), ``batch`` (the one scoring path:
decode → group by class and arm → score → encode), ``prediction_log`` and ``metrics``,
``http_app`` (the FastAPI app: errors → HTTP answers, credentials, body limit); the
edge fleet's routes (devices, assignments, bundles) are in ``edge_routes``, a base class.
"""

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import msgspec
import numpy as np
from fastapi import Request
from fastapi.responses import JSONResponse, Response
from ray import serve
from ray.serve import Application

from pumpfleet import devices, explain, records
from pumpfleet.edge_ingest import EdgeUpload, handle_upload
from pumpfleet.errors import PumpfleetError
from pumpfleet.job_options import RetrainOptions, auth_headers, retrain_submission
from pumpfleet.registry import Registry
from pumpfleet.settings import get_settings
from serve_apps import batch, json_decode, metrics, one_write, prediction_log
from serve_apps.board_routes import BoardRoutes
from serve_apps.durable_log import DurableLog
from serve_apps.edge_routes import EdgeFleetRoutes
from serve_apps.errors import Forbidden, InvalidFields, Unavailable
from serve_apps.fleet_routes import FleetRoutes
from serve_apps.http_app import ADMIN, DEVICE, SCORING, app, device_of, read_body
from serve_apps.model_set import ModelSet
from serve_apps.schemas import (
    ARROW_STREAM,
    JSON,
    BatchRequest,
    BatchResponse,
    Feedback,
    RetrainRequest,
    ScoreRequest,
    ScoreResponse,
    ScoringConfig,
    SplitRequest,
)
from serve_apps.windows import ReadingsWindows

log = logging.getLogger(__name__)


def guarded(loop: str, step: Callable[[], object]) -> bool:
    """One step of a background loop (a flush, a refresh): whatever it raises is logged
    with its traceback and counted (``pumpfleet_loop_errors``), and the loop goes on."""
    try:
        step()
    except Exception:
        log.exception("%s failed; carrying on", loop)
        metrics.loop_failed(loop)
        return False
    return True


def _shadow_done(future: Future[Any]) -> None:
    """A shadow write's outcome: an error is logged and counted, never lost in the pool."""
    e = future.exception()
    if e is not None:
        log.error("shadow scoring failed; the rows were logged without it", exc_info=e)
        metrics.loop_failed("shadow")


# A bounded queue per replica: past 64 requests in progress and 32 waiting, a request is
# answered 503 with Retry-After at once rather than left waiting. The front door keeps the
# same bound in HAProxy (front_door.configure), where a request waits before the replica
# reads it; Serve's own applies on the replicas' other ways in.
MAX_ONGOING_REQUESTS = 64
MAX_QUEUED_REQUESTS = 32
RETRY_AFTER_S = 1


@serve.deployment(
    name="PumpScorer",
    max_ongoing_requests=MAX_ONGOING_REQUESTS,
    max_queued_requests=MAX_QUEUED_REQUESTS,
    backpressure_config={"status_code": 503, "retry_after_s": RETRY_AFTER_S},
    logging_config={"enable_access_log": False},
)
@serve.ingress(app)
class PumpScorer(EdgeFleetRoutes, BoardRoutes, FleetRoutes):
    def __init__(self, config: dict[str, Any]) -> None:
        # each answer's head and body in one write: a replica killed between the two
        # would leave the front door a started answer it cannot send elsewhere
        one_write.install()
        self.config = c = ScoringConfig(**config)
        c.check()
        app.state.config = c
        self.models = ModelSet(Registry(c.tracking_uri), c.aliases(), c.challenger_weight, c.salt)
        self._refresh()
        for cls, served in self.models.classes.items():
            if served.weight_saved and served.weight != c.challenger_weight:
                log.warning(
                    "%s: its saved split (challenger weight %.2f) is served, not the "
                    "configured default %.2f; change it with /v1/admin/split",
                    cls,
                    served.weight,
                    c.challenger_weight,
                )
        # Written ahead (one write call) before each answer, so a replica's death loses
        # no answered row; to Parquet by the flush thread every flush_seconds, on the
        # request path only when 20,000 rows wait (a stalled disk, a flood of batches).
        self.log = DurableLog(c.predictions_dir, max_rows=20_000)
        self.feedback_log = DurableLog(
            f"{c.predictions_dir.rstrip('/')}-feedback", to_table=records.feedback_table
        )
        self._shadow = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shadow")
        self._stop = threading.Event()
        self._flusher = threading.Thread(target=self._flush_loop, daemon=True)
        self._flusher.start()
        self._refresher = threading.Thread(target=self._refresh_loop, daemon=True)
        self._refresher.start()
        self.start_fleet()  # the fleet state's feed and webhook sender
        # the hot route's lean path, taken by the doors ahead of FastAPI (doors.py)
        app.state.score_one = self.score_body
        log.info("%s: serving classes %s", c.stage, sorted(self.models.classes))

    def _refresh(self) -> dict[str, dict[str, str]]:
        self._load_devices()  # first: a registry that is down must not delay a revoke
        versions = self.models.refresh()
        metrics.serving(self.models.classes)
        return versions

    def _load_devices(self) -> None:
        """The edge devices' credentials, re-read at every refresh (a revoked device is
        refused within ``refresh_seconds``). A book that cannot be read lets no device
        in until it can."""
        where = self.config.devices()
        try:
            book = devices.load(where)
        except (OSError, ValueError, PumpfleetError):
            log.exception("the device book %s cannot be read: no device may upload", where)
            book = devices.DeviceBook()
        app.state.devices = devices.Verifier(book)

    def _flush_once(self) -> None:
        guarded("prediction log flush", self.log.flush)
        guarded("feedback log flush", self.feedback_log.flush)
        guarded("metrics flush", metrics.flush)

    def _flush_loop(self) -> None:
        while not self._stop.wait(self.config.flush_seconds):
            self._flush_once()

    def _refresh_loop(self) -> None:
        """Follow the registry: promotions, rollbacks and split changes made elsewhere (an
        admin call on another replica, ``pumpfleet promote``) reach this replica too; and
        the device book. A refresh that fails (the registry is down) leaves what is loaded
        serving."""
        while not self._stop.wait(self.config.refresh_seconds):
            guarded("refresh", self._refresh)

    def __del__(self) -> None:  # graceful shutdown: nothing logged is lost
        self._stop.set()
        self._shadow.shutdown(wait=True)
        self.log.flush()
        self.feedback_log.flush()
        metrics.flush()

    # --- probes and listing --------------------------------------------------------

    @app.get("/healthz")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(self) -> JSONResponse:
        classes = sorted(self.models.classes)
        body = {"ready": bool(classes), "classes": classes}
        return JSONResponse(status_code=200 if classes else 503, content=body)

    @app.get("/v1/models", dependencies=SCORING)
    def list_models(self, request: Request) -> dict[str, Any]:
        """Per class what is served: versions, the split and where it comes from (a split
        saved on the registered model wins over the configured default weight)."""
        return {
            "stage": self.config.stage,
            "default_challenger_weight": self.config.challenger_weight,
            "classes": self.models.listing(),
        }

    # --- scoring -------------------------------------------------------------------

    def _score(self, items: batch.Items, started: float) -> tuple[batch.Answers, list[batch.Group]]:
        """Decoded items through the batch path: grouped by class and arm, each group
        scored, answered, counted and logged (in shadow mode, with the challenger's
        scores, added off the response path)."""
        answers = batch.Answers(len(items))
        groups = batch.group(items, self.models.classes, self.config.salt)
        for g in groups:
            scores = batch.score(g)
            k = len(g.rows)
            health = batch.health_columns(g.served.health, scores, k)
            answers.fill(g, scores, health)
            latency = (time.perf_counter() - started) * 1000.0
            metrics.scored(g.pump_class, str(g.arm), k, latency)
            columns = prediction_log.log_columns(g, items, scores, health, latency)
            challenger = g.served.shadow_model()
            if challenger is None:
                prediction_log.write(self.log, columns, k)
            else:
                self._shadow.submit(
                    prediction_log.write_with_shadow, self.log, columns, challenger, g, items
                ).add_done_callback(_shadow_done)
            self.fleet_feed_group(g, columns)  # queued: never waits on the fleet db
        return answers, groups

    def score_body(self, body: bytes) -> bytes | None:
        """``/v1/score``'s answer, for the doors to send ahead of FastAPI's routing and
        validation, to a body msgspec proves valid (:func:`json_decode.single`): scored,
        logged and counted as :meth:`score` does, the same bytes as its answer. None for
        anything else (an error, an explanation), which :meth:`score` then answers."""
        started = time.perf_counter()
        found = json_decode.single(body)
        if found is None:
            return None
        pump_id, pump_class, readings = found
        items = batch.Items([pump_id], [pump_class], ReadingsWindows([readings]), {})
        answers, _ = self._score(items, started)
        out = batch.result(items, answers, 0)
        if out is None:  # nothing scored nor logged: the route says why, as ever
            return None
        out["explanation"] = None
        return msgspec.json.encode(out)

    @app.post("/v1/score", dependencies=SCORING)
    async def score(self, req: ScoreRequest, request: Request) -> ScoreResponse:
        # async: well under a millisecond of work, run on the replica's event loop
        # rather than through a thread pool hop (measured in benchmarks/serve_load.py)
        started = time.perf_counter()
        items = batch.one(req)
        answers, groups = self._score(items, started)
        out = batch.result(items, answers, 0)
        if out is None:  # an unserved class, readings that do not fit its model
            metrics.rejected()
            raise InvalidFields([items.errors[0]])
        if req.explain:  # occlusion with the served model: what the edge would say too
            model, raw = groups[0].model, groups[0].windows[0]
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
        body = await read_body(request, self.config.max_body_bytes)
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == ARROW_STREAM:  # the door let only this and JSON in
            items = batch.decode_arrow(body, self.config.max_decoded_bytes)
        else:
            items = batch.decode_json(body)
        answers, _ = self._score(items, started)
        if ARROW_STREAM in request.headers.get("accept", ""):
            return Response(batch.encode_arrow(items, answers), media_type=ARROW_STREAM)
        return Response(batch.encode_json_body(items, answers), media_type=JSON)

    # --- feedback --------------------------------------------------------------------

    @app.post("/v1/feedback", dependencies=SCORING)
    def feedback(self, fb: Feedback, request: Request) -> dict[str, Any]:
        """An observed outcome (a failure time, or a RUL seen in hindsight), logged for the
        realised online metrics of each arm."""
        if fb.failed_at is None and fb.rul_hours is None and fb.maintained_at is None:
            raise InvalidFields.at("failed_at", "give failed_at, rul_hours or maintained_at")
        self.fleet_check_pump(fb.pump_id, fb.pump_class)
        self.fleet_feedback(fb.pump_id, fb.failed_at, fb.maintained_at)  # marks its alerts
        if fb.failed_at is None and fb.rul_hours is None:
            return {"accepted": 1}
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

    @app.post("/v1/edge/upload", dependencies=DEVICE)
    def edge_upload(self, up: EdgeUpload, request: Request) -> dict[str, Any]:
        """A device's predictions and alerts (store-and-forward from the edge agent),
        stored once per ``batch_key``: a batch sent again is acknowledged, not stored
        twice (the same key with other records is a 409). They land beside the cloud's
        prediction log, for monitoring and retraining. A device uploads with its own
        token, and only as itself."""
        device = device_of(request)
        if device is not None and up.device_id != device:
            raise Forbidden(f"this token is device {device}'s: it may not upload as another")
        answer = handle_upload(self.config.predictions_dir, up.model_dump())
        self.fleet_feed_upload(up, answer)
        return answer

    # --- admin ---------------------------------------------------------------------

    @app.post("/v1/admin/split", dependencies=ADMIN)
    def split(self, change: SplitRequest, request: Request) -> dict[str, Any]:
        """Set the challenger's weight and shadow mode, for one class or all, live. The
        setting is stored on the registered model, so every replica follows it."""
        if self.config.stage != "production":
            raise InvalidFields.at("pump_class", "the staging app serves no A/B split")
        out = self.models.set_split(change.pump_class, change.challenger_weight, change.shadow)
        log.info("split changed: %s", change.model_dump(exclude_none=True))
        return out

    @app.post("/v1/admin/retrain", dependencies=ADMIN)
    def retrain(self, req: RetrainRequest, request: Request) -> dict[str, Any]:
        """Submit the retraining Ray job (``ray_jobs/retrain.py``) for some classes or all;
        returns its submission id. The job trains challengers and gates them; it does not
        promote."""
        served = self.models.classes
        unknown = sorted(set(req.classes or []) - set(served))
        if unknown:
            raise InvalidFields.at("classes", f"unknown or unserved class {unknown[0]!r}")
        address = self.config.jobs_address
        if not address:
            raise Unavailable(
                "retraining is not configured: no Ray job server (PUMPFLEET_JOBS_ADDRESS)"
            )
        from ray.job_submission import JobSubmissionClient

        options = RetrainOptions(classes=req.classes, reason=req.reason, epochs=req.epochs)
        token = get_settings().ray_auth_token
        try:  # Serve reaches the jobs only through Ray's job API
            client = JobSubmissionClient(address, headers=auth_headers(token))
            job_id = str(client.submit_job(**retrain_submission(options)))
        except Exception as e:  # the job server is down or refused: say so, not a 500
            log.error("retrain submission to %s failed: %s", address, e)
            raise Unavailable(f"the Ray job server did not take the job: {e}") from None
        log.info("retrain job %s submitted: %s", job_id, req.reason)
        return {"job_id": job_id, "classes": req.classes or sorted(served)}

    @app.post("/v1/admin/reload", dependencies=ADMIN)
    def reload(self, request: Request) -> dict[str, Any]:
        """Pick up alias changes (a promotion, a rollback) without a restart."""
        return {"classes": self._refresh()}


def build_app(args: ScoringConfig) -> Application:
    """The app builder ``serve run`` / ``serve deploy`` and ``pumpfleet serve`` share."""
    args.check()
    return PumpScorer.options(  # type: ignore[attr-defined]
        ray_actor_options={"num_cpus": args.num_cpus}, num_replicas=args.num_replicas
    ).bind(args.model_dump())
