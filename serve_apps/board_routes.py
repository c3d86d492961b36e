"""The fleet board (issue 20), part of the scoring deployment (:class:`BoardRoutes` is a
base of ``serve_apps.scoring.PumpScorer``): a static single-page app for maintenance
crews, and the one JSON route it needs that the fleet routes do not give.

    GET /board                 the page (open: it holds no data; it asks for the key)
    GET /board/<asset>         its scripts and styles (open)
    GET /v1/drift              X-API-Key: <scoring key>: each class's drift status, from
                               the monitor's latest report
    GET /v1/fleet/<pump>/sensors?pump_class=&since=&until=&limit=
                               X-API-Key: a pump's sensor readings around an alert: each
                               scored window's channel means, from the prediction log

The page logs in with a scoring key, kept in the tab's sessionStorage and sent as
``X-API-Key`` on each call to ``/v1/fleet``, ``/v1/alerts``, ``/v1/models`` and
``/v1/drift``: the service stays stateless (no session to share between replicas), and
a key that no browser sends by itself cannot be ridden by another site (no CSRF).

The assets are package data (``serve_apps/board/``), served by name from a fixed list:
nothing else under the package, and no path from the request, is ever opened. Each
answer carries a Content-Security-Policy that allows scripts, styles and calls from the
service itself only (no inline script, no other origin), so the key in the tab is out
of reach of anything injected into it.
"""

from __future__ import annotations

import functools
import logging
import time
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Annotated, Any

from fastapi import Path as PathParam
from fastapi import Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from pumpfleet import storage
from pumpfleet.records import INPUT_PREFIX, NAME
from serve_apps.http_app import SCORING, app
from serve_apps.schemas import ScoringConfig

log = logging.getLogger(__name__)

# the only files the board serves, and their media types
ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "charts.js": "text/javascript; charset=utf-8",
    "common.js": "text/javascript; charset=utf-8",
    "lists.js": "text/javascript; charset=utf-8",
    "pump.js": "text/javascript; charset=utf-8",
    "board.js": "text/javascript; charset=utf-8",
    "board.css": "text/css; charset=utf-8",
}
CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ]
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    # a redeployed service serves its own board, not a cached older one
    "Cache-Control": "no-cache",
}
DRIFT_REPORT = "drift-latest.json"  # written by the monitor (pumpfleet.monitoring.run)
MAX_SPAN_DAYS = 31  # of sensor readings one request reads
MAX_READINGS = 2000
DAY = 86400.0
PumpIdParam = Annotated[str, PathParam(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")]
Seconds = Annotated[float | None, Query(ge=0, le=2**33, description="unix seconds")]


@functools.cache
def asset_bytes(name: str) -> bytes:
    """The packaged asset ``name`` (one of :data:`ASSETS`)."""
    return resources.files("serve_apps").joinpath("board", name).read_bytes()


def serve_asset(name: str) -> Response:
    """The asset's answer: its bytes, media type and the board's headers; 404 (JSON, as
    the service's other answers) for any name not in :data:`ASSETS`."""
    if name not in ASSETS:
        known = ", ".join(n for n in ASSETS if n != "index.html")
        return JSONResponse(
            {"detail": f"no board asset {name[:64]!r}: the board serves {known}"},
            status_code=404,
            headers=HEADERS,
        )
    return Response(asset_bytes(name), media_type=ASSETS[name], headers=HEADERS)


def reports_of(config: ScoringConfig) -> str:
    """The monitor's reports beside the prediction log (the workspace's ``reports``)."""
    root = config.predictions_dir.rstrip("/")
    parent = root.rsplit("/", 1)[0] if "/" in root else "."
    return f"{parent}/reports"


def drift_status(summary: dict[str, Any] | None) -> dict[str, Any]:
    """Each class's drift status from the monitor's summary (None: no report yet): is
    its drift alert active, which features drifted, is its health alarm rate alerting,
    and the classes it skipped with why."""
    if summary is None:
        return {"created": None, "classes": {}, "skipped": {}, "message": "no monitor report yet"}
    classes = {}
    for cls, s in (summary.get("classes") or {}).items():
        health = s.get("health") or {}
        classes[str(cls)] = {
            "drifted": bool(s.get("drifted")),
            "alert_active": bool(s.get("alert_active")),
            "drifted_features": list(s.get("drifted_features") or []),
            "health_alert_active": bool(health.get("alert_active")),
            "champion": s.get("champion"),
        }
    return {
        "created": summary.get("created"),
        "classes": classes,
        "skipped": {str(k): str(v) for k, v in (summary.get("skipped") or {}).items()},
        "message": summary.get("message"),
    }


def log_files(log_root: str, pump_class: str, since: float, until: float) -> list[str]:
    """The prediction log's files that may hold rows of ``pump_class`` scored between
    ``since`` and ``until``: of each UTC day folder they were written in (and the day
    after, for rows flushed after midnight), the class's partition and the files of
    every class (the replicas' durable log writes those)."""
    out: list[str] = []
    day = datetime.fromtimestamp(since, UTC).date()
    last = datetime.fromtimestamp(until + DAY, UTC).date()
    while day <= last:
        folder = storage.join(log_root, f"date={day.isoformat()}")
        _, base = storage.resolve(folder)
        for path in storage.list_files(folder, ".parquet"):
            rel = path[len(base) :].lstrip("/")
            if "/" not in rel or rel.startswith(f"pump_class={pump_class}/"):
                out.append(path)
        day += timedelta(days=1)
    return out


def sensor_history(
    log_root: str, pump_id: str, pump_class: str, since: float, until: float, limit: int
) -> dict[str, Any]:
    """A pump's logged channel means (``in_<name>``: its sensors and operating settings
    over each scored window) between ``since`` and ``until``, the latest ``limit``, oldest
    first; a file that cannot be read is left out and counted."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    fs, _ = storage.resolve(log_root)
    frames, unreadable = [], 0
    for path in log_files(log_root, pump_class, since, until):
        try:
            table = pq.read_table(path, filesystem=fs, filters=[("pump_id", "==", pump_id)])
        except (OSError, pa.ArrowException) as e:
            log.warning("prediction log file %s left out: %s", path, e)
            unreadable += 1
            continue
        names = [c for c in table.column_names if c.startswith(INPUT_PREFIX)]
        if table.num_rows and names and "timestamp" in table.column_names:
            frames.append(table.select(["timestamp", *names]).to_pandas())
    answer: dict[str, Any] = {
        "pump_id": pump_id,
        "pump_class": pump_class,
        "since": since,
        "until": until,
        "channels": [],
        "readings": [],
        "unreadable_files": unreadable,
    }
    if not frames:
        return answer
    rows = pd.concat(frames, ignore_index=True)
    at = rows["timestamp"].astype("datetime64[ns]").astype("int64") / 1e9
    rows = rows[(at >= since) & (at <= until)].sort_values("timestamp").tail(limit)
    channels = sorted(c for c in rows.columns if c != "timestamp" and rows[c].notna().any())
    answer["channels"] = [c.removeprefix(INPUT_PREFIX) for c in channels]
    for r in rows.itertuples(index=False):
        values = r._asdict()
        stamp = pd.Timestamp(values["timestamp"]).tz_localize(None)
        reading: dict[str, Any] = {"at": stamp.isoformat(timespec="milliseconds") + "Z"}
        for c in channels:
            v = values[c]
            reading[c.removeprefix(INPUT_PREFIX)] = None if pd.isna(v) else float(v)
        answer["readings"].append(reading)
    return answer


def _window(since: float | None, until: float | None, now: float) -> tuple[float, float]:
    """The span asked for (default: the last 3 days); 422 naming the field if it is
    backwards or longer than MAX_SPAN_DAYS."""
    until = now if until is None else until
    since = until - 3 * DAY if since is None else since
    problem = None
    if since > until:
        problem = "must not be after until"
    elif until - since > MAX_SPAN_DAYS * DAY:
        problem = f"at most {MAX_SPAN_DAYS} days before until"
    if problem:
        raise RequestValidationError(
            [{"loc": ("query", "since"), "msg": problem, "type": "value_error"}]
        )
    return since, until


class BoardRoutes:
    """The board's routes; the deployment sets ``config``."""

    config: ScoringConfig

    @app.get("/board", include_in_schema=False)
    def board(self) -> Response:
        """The fleet board's page."""
        return serve_asset("index.html")

    @app.get("/board/{asset}", include_in_schema=False)
    def board_asset(self, asset: str) -> Response:
        """One of the board's scripts and styles (only those)."""
        return serve_asset(asset)

    @app.get("/v1/drift", dependencies=SCORING)
    def drift(self, request: Request) -> dict[str, Any]:
        """Each class's drift status as the monitor's latest report has it (its time in
        ``created``; none: the monitor has not run)."""
        uri = storage.join(reports_of(self.config), DRIFT_REPORT)
        try:
            summary = storage.read_json(uri) if storage.exists(uri) else None
        except (OSError, ValueError) as e:
            log.warning("could not read the monitor's report %s: %s", uri, e)
            return {**drift_status(None), "message": f"the monitor's report is unreadable: {e}"}
        return drift_status(summary if isinstance(summary, dict) else None)

    @app.get("/v1/fleet/{pump_id}/sensors", dependencies=SCORING)
    def fleet_sensors(
        self,
        request: Request,
        pump_id: PumpIdParam,
        pump_class: Annotated[str, Query(pattern=NAME, description="the pump's class")],
        since: Seconds = None,
        until: Seconds = None,
        limit: Annotated[int, Query(ge=1, le=MAX_READINGS)] = 500,
    ) -> dict[str, Any]:
        """A pump's sensor readings around an alert: each scored window's channel and
        setting means, as the prediction log has them, between ``since`` and ``until``
        (default: the last 3 days; at most 31), the latest ``limit``, oldest first."""
        first, last = _window(since, until, time.time())
        return sensor_history(self.config.predictions_dir, pump_id, pump_class, first, last, limit)
