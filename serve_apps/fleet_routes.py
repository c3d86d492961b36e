"""The crews' view of the fleet, part of the scoring deployment (:class:`FleetRoutes` is
a base of ``serve_apps.scoring.PumpScorer``): the ranked work list, a pump's history,
the alerts and a crew's actions on them, behind the scoring key.

    GET  /v1/fleet?site=&pump_class=&min_risk=&stale=&limit=&offset=
    GET  /v1/fleet/{pump_id}?limit=
    GET  /v1/alerts?status=&pump_class=&site=&limit=&offset=
    POST /v1/alerts/{alert_id}/ack      {"by": "maria"}
    POST /v1/alerts/{alert_id}/assign   {"by": "maria", "assignee": "crew-3"}
    POST /v1/alerts/{alert_id}/close    {"by": "crew-3", "note": "...", "outcome": "hit"}

The state is fed off the request path (:mod:`serve_apps.fleet_feed`) and the alert
events are sent as webhooks by :mod:`serve_apps.webhook_sender`; both start with the
replica (or with the first use of the fleet, in a replica built by hand in tests).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

import sqlalchemy as sa
from fastapi import Path as PathParam
from fastapi import Query, Request
from pydantic import BaseModel, ConfigDict, Field

from pumpfleet import fleet_views as views
from pumpfleet.errors import NotFoundError
from pumpfleet.fleet_alerts import AlertRules
from pumpfleet.fleet_schema import default_url, pumps
from pumpfleet.fleet_store import FleetDB, ScoredRow
from pumpfleet.records import NAME
from pumpfleet.routing import Arm
from serve_apps import metrics
from serve_apps.errors import InvalidFields, Unavailable
from serve_apps.fleet_feed import FleetFeed, cloud_rows, edge_rows
from serve_apps.fleet_models import Alert, AlertPage, FleetPage, PumpDetail
from serve_apps.http_app import SCORING, app
from serve_apps.schemas import ScoringConfig
from serve_apps.webhook_sender import WebhookSender

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_PAGE = 500
MAX_SCORES = 2000
Name = Annotated[str | None, Query(pattern=NAME, max_length=128)]
PumpIdParam = Annotated[str, PathParam(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")]
AlertId = Annotated[int, PathParam(ge=1, le=2**62)]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE)]
Offset = Annotated[int, Query(ge=0, le=10**9)]
Person = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f]+$")]


class AckRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    by: Person


class AssignRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    by: Person
    assignee: Person


class CloseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    by: Person
    note: str = Field(min_length=1, max_length=4000, pattern=r"^[^\x00]+$")  # PG: no NUL
    outcome: Literal["hit", "false_alarm"] | None = Field(
        default=None, description="what the crew found; else settled by failures or time"
    )


@dataclass
class FleetHub:
    """A replica's fleet database, its feed and its webhook sender."""

    db: FleetDB
    feed: FleetFeed
    sender: WebhookSender


def guarded(loop: str, step: Callable[[], object]) -> bool:
    """A background step: an error is logged and counted, the loop goes on."""
    try:
        step()
    except Exception:
        log.exception("%s failed; carrying on", loop)
        metrics.loop_failed(loop)
        return False
    return True


def open_hub(config: ScoringConfig, stop: threading.Event) -> FleetHub:
    """The fleet database of ``config`` (migrated), its feed and its sender."""
    f = config.fleet
    url = f.db_url or default_url(config.workspace_dir())
    rules = AlertRules(f.open_after, f.clear_after, f.lower_band, f.escalate_at)
    db = FleetDB(url, rules, f.webhook_urls, f.default_horizon_hours)
    feed = FleetFeed(
        db,
        stop,
        f.queue_rows,
        f.explain_per_batch,
        metrics.loop_failed,
        metrics.fleet_dropped,
        gather_seconds=f.feed_seconds,
    )

    def chores() -> None:
        now = time.time()
        db.settle(now)
        day = 24 * 3600.0
        db.prune(now - f.score_retention_days * day, now - f.outbox_retention_days * day)
        metrics.fleet_gauges(
            views.open_alerts_by(db.engine),
            views.stale_pumps(db.engine, now, f.stale_seconds),
            views.devices_online(db.engine, now, f.device_stale_seconds),
        )

    return FleetHub(db, feed, WebhookSender(db, f, stop, guarded, chores))


def writing(job: Callable[[FleetDB], None]) -> Callable[[FleetDB, list[int]], list[ScoredRow]]:
    """A feed job that writes by itself (feedback), after the rows queued before it."""

    def run(db: FleetDB, budget: list[int]) -> list[ScoredRow]:
        job(db)
        return []

    run.writes = True  # type: ignore[attr-defined]
    return run


def _feedback(pump_id: str, at: float, failure: bool, db: FleetDB) -> None:
    db.feedback(pump_id, at, failure)


def never_raises(feed: Callable[..., None]) -> Callable[..., None]:
    """A feed hook on the scoring path: whatever goes wrong is logged and counted, and
    the request it came with is answered as if the fleet were not there."""

    @functools.wraps(feed)
    def hook(*args: Any, **kwargs: Any) -> None:
        try:
            feed(*args, **kwargs)
        except Exception:
            log.exception("feeding the fleet state failed; the request goes on")
            metrics.loop_failed("fleet feed")

    return hook


_HUB = threading.Lock()


class FleetRoutes:
    """The fleet's routes and feed; the deployment sets ``config`` and ``models``."""

    config: ScoringConfig
    models: Any
    _hub: FleetHub | None = None
    _hub_failed_at: float = -60.0
    _hub_opening: bool = False

    def fleet_hub(self, required: bool = True) -> FleetHub | None:
        """The replica's hub, opened on first use (a database that cannot be opened is
        tried again at most every 30 s; Unavailable where ``required``)."""
        if self._hub is not None:
            return self._hub
        with _HUB:
            if self._hub is None and time.monotonic() - self._hub_failed_at > 30:
                stop = getattr(self, "_stop", None) or threading.Event()
                try:
                    self._hub = open_hub(self.config, stop)
                except Exception:
                    log.exception("the fleet database cannot be opened")
                    metrics.loop_failed("fleet open")
                    self._hub_failed_at = time.monotonic()
        if self._hub is None and required:
            raise Unavailable("the fleet database is not available")
        return self._hub

    def start_fleet(self) -> None:
        """Open the fleet database, its feed and its sender as the replica starts (the
        production application's; a database that is down is tried again later)."""
        if self.config.stage == "production":
            self.fleet_hub(required=False)

    def _feeding(self, rows: int) -> FleetHub | None:
        """The hub to feed, or None (rows not fed, counted as dropped): the request path
        never opens the database itself, a thread does (a database that is down would
        hold the request for its connect timeout)."""
        if self.config.stage != "production":  # staging's scores are not the fleet's
            return None
        if self._hub is not None:
            return self._hub
        if rows > 0:
            metrics.fleet_dropped(rows)
        with _HUB:
            if self._hub_opening or time.monotonic() - self._hub_failed_at < 30:
                return None
            self._hub_opening = True
        threading.Thread(target=self._open_hub, name="fleet-open", daemon=True).start()
        return None

    def _open_hub(self) -> None:
        try:
            self.fleet_hub(required=False)
        finally:
            self._hub_opening = False

    @never_raises
    def fleet_feed_group(self, group: Any, columns: dict[str, Any]) -> None:
        """A scored group's prediction-log columns into the fleet state (queued)."""
        hub = self._feeding(len(group.rows))
        if hub is not None:
            model, windows = group.model, group.windows
            hub.feed.offer(
                lambda db, budget: cloud_rows(columns, model, windows, budget), len(group.rows)
            )

    @never_raises
    def fleet_feed_upload(self, up: Any, answer: dict[str, Any]) -> None:
        """An edge upload's records (not a duplicate batch) into the fleet state."""
        if answer.get("duplicate"):
            return
        hub = self._feeding(len(up.records))
        if hub is None:
            return
        specs = {
            c: s.arms[Arm.CHAMPION].spec
            for c, s in self.models.classes.items()
            if Arm.CHAMPION in s.arms
        }
        site = (up.health or {}).get("site")
        site = site if isinstance(site, str) and site else None
        classes = {r.pump_class for r in up.records}
        device_class = next(iter(classes)) if len(classes) == 1 else None

        def job(db: FleetDB, budget: list[int]) -> list[ScoredRow]:
            db.device_seen(up.device_id, site, device_class)
            return edge_rows(up.device_id, site, up.records, specs)

        hub.feed.offer(job, max(1, len(up.records)))

    def fleet_check_pump(self, pump_id: str, pump_class: str) -> None:
        """An outcome names a pump the fleet knows, as the class it is: NotFoundError
        naming ``pump_id``, or InvalidFields at ``pump_class``, else (a mistyped id would
        mark no alert and count for no model). Not checked where no fleet is kept
        (staging, a database not open or down): the outcome is then logged as given."""
        hub = self._hub if self.config.stage == "production" else None
        if hub is None:
            return

        def known() -> str | None:
            q = sa.select(pumps.c.pump_class).where(pumps.c.pump_id == pump_id)
            with hub.db.engine.connect() as conn:
                return conn.execute(q).scalar_one_or_none()

        try:
            found = known()
            if found is None:  # a pump scored a moment ago may wait in this replica's feed
                if not hub.feed.drain(timeout=5.0):
                    log.warning("the fleet feed is behind; feedback on %s not checked", pump_id)
                    return
                found = known()
        except sa.exc.OperationalError as e:
            log.error("the fleet database failed; feedback not checked: %s", e)
            return
        if found is None:
            raise NotFoundError(
                f"pump_id {pump_id!r}: no such pump in the fleet (never scored or uploaded)"
            )
        if found != pump_class:
            raise InvalidFields.at("pump_class", f"pump {pump_id} is {found}, not {pump_class}")

    @never_raises
    def fleet_feedback(
        self, pump_id: str, failed_at: float | None, maintained_at: float | None
    ) -> None:
        """A failure or a maintenance: marks the pump's alerts (queued after its rows)."""
        hub = self._feeding(1)
        if hub is None:
            return
        for at, failure in ((failed_at, True), (maintained_at, False)):
            if at is not None:
                hub.feed.offer(writing(functools.partial(_feedback, pump_id, at, failure)), 1)

    def _db(self, read: Callable[[FleetDB], T]) -> T:
        hub = self.fleet_hub()
        assert hub is not None
        try:
            return read(hub.db)
        except sa.exc.OperationalError as e:
            log.error("the fleet database failed: %s", e)
            raise Unavailable("the fleet database is not available") from None

    # --- routes ------------------------------------------------------------------------

    @app.get("/v1/fleet", dependencies=SCORING, response_model=FleetPage)
    def fleet_list(
        self,
        request: Request,
        site: Name = None,
        pump_class: Name = None,
        min_risk: Annotated[float | None, Query(ge=0, le=1)] = None,
        stale: bool | None = None,
        limit: Limit = 100,
        offset: Offset = 0,
    ) -> dict[str, Any]:
        """The work list: pumps ranked by failure risk (then shortest RUL), filtered by
        site, class, risk and staleness, a page at a time."""
        stale_after = self.config.fleet.stale_seconds
        return self._db(
            lambda db: views.fleet(
                db.engine,
                time.time(),
                stale_after,
                site,
                pump_class,
                min_risk,
                stale,
                limit,
                offset,
            )
        )

    @app.get("/v1/fleet/{pump_id}", dependencies=SCORING, response_model=PumpDetail)
    def fleet_pump(
        self,
        request: Request,
        pump_id: PumpIdParam,
        limit: Annotated[int, Query(ge=1, le=MAX_SCORES)] = 200,
    ) -> dict[str, Any]:
        """A pump's state, its latest ``limit`` scores (oldest first) and its alerts."""
        stale_after = self.config.fleet.stale_seconds
        return self._db(lambda db: views.pump(db.engine, pump_id, time.time(), stale_after, limit))

    @app.get("/v1/alerts", dependencies=SCORING, response_model=AlertPage)
    def alert_list(
        self,
        request: Request,
        status: Literal["open", "acknowledged", "assigned", "closed"] | None = None,
        pump_class: Name = None,
        site: Name = None,
        limit: Limit = 100,
        offset: Offset = 0,
    ) -> dict[str, Any]:
        """Alerts, newest first, each with its history."""
        return self._db(
            lambda db: views.alert_list(db.engine, status, pump_class, site, limit, offset)
        )

    @app.post("/v1/alerts/{alert_id}/ack", dependencies=SCORING, response_model=Alert)
    def alert_ack(self, alert_id: AlertId, body: AckRequest, request: Request) -> dict[str, Any]:
        """Acknowledge an open alert (409 if it is not open)."""
        return self._db(lambda db: db.act(alert_id, "ack", body.by))

    @app.post("/v1/alerts/{alert_id}/assign", dependencies=SCORING, response_model=Alert)
    def alert_assign(
        self, alert_id: AlertId, body: AssignRequest, request: Request
    ) -> dict[str, Any]:
        """Assign an alert to a crew (again, to hand it over; 409 once closed)."""
        return self._db(lambda db: db.act(alert_id, "assign", body.by, assignee=body.assignee))

    @app.post("/v1/alerts/{alert_id}/close", dependencies=SCORING, response_model=Alert)
    def alert_close(
        self, alert_id: AlertId, body: CloseRequest, request: Request
    ) -> dict[str, Any]:
        """Close an alert with a note, and what the crew found (409 if closed already)."""
        return self._db(
            lambda db: db.act(alert_id, "close", body.by, note=body.note, outcome=body.outcome)
        )
