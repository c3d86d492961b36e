"""The fleet board (issue 20), part of the scoring deployment (:class:`BoardRoutes` is a
base of ``serve_apps.scoring.PumpScorer``): a static single-page app for maintenance
crews, and the one JSON route it needs that the fleet routes do not give.

    GET /board                 the page (open: it holds no data; it asks for the key)
    GET /board/<asset>         its scripts and styles (open)
    GET /v1/drift              X-API-Key: <scoring key>: each class's drift status, from
                               the monitor's latest report

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
from importlib import resources
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from pumpfleet import storage
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
