"""The fleet database's tables and how a database is opened: SQLite under the workspace
by default, PostgreSQL on a cluster (``postgresql+psycopg://...``), through SQLAlchemy 2,
brought to the newest schema by the Alembic migrations shipped in
``pumpfleet/migrations`` whenever it is opened.

Times are unix seconds (doubles), the same on both engines; JSON columns hold the
drivers and the webhook bodies.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import sqlalchemy as sa

log = logging.getLogger(__name__)

VERSION_TABLE = "pumpfleet_fleet_version"  # not alembic_version: MLflow's db may be shared
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite: a rowid alias
Name = sa.String(128)
Time: sa.Double[float] = sa.Double()

metadata = sa.MetaData()

pumps = sa.Table(
    "fleet_pumps",
    metadata,
    sa.Column("pump_id", Name, primary_key=True),
    sa.Column("pump_class", Name, nullable=False),
    sa.Column("site", Name),
    sa.Column("device_id", Name),
    sa.Column("last_reading_at", Time),
    sa.Column("rul_hours", sa.Double()),
    sa.Column("failure_probability", sa.Double()),
    sa.Column("model_version", sa.String(32)),
    sa.Column("arm", sa.String(32)),
    sa.Column("health_score", sa.Double()),
    sa.Column("anomaly", sa.Boolean()),
    sa.Column("drivers", sa.JSON()),
    sa.Column("threshold", sa.Double()),
    sa.Column("horizon_hours", sa.Double()),
    sa.Column("above", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("below", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("updated_at", Time, nullable=False),
)

scores = sa.Table(
    "fleet_scores",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("pump_id", Name, nullable=False),
    sa.Column("at", Time, nullable=False),
    sa.Column("rul_hours", sa.Double()),
    sa.Column("failure_probability", sa.Double()),
    sa.Column("model_version", sa.String(32)),
    sa.Column("arm", sa.String(32)),
    sa.Column("health_score", sa.Double()),
    sa.Column("anomaly", sa.Boolean()),
    sa.Index("ix_fleet_scores_pump_at", "pump_id", "at"),
)

alerts = sa.Table(
    "fleet_alerts",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("pump_id", Name, nullable=False),
    sa.Column("pump_class", Name, nullable=False),
    sa.Column("site", Name),
    sa.Column("horizon_hours", sa.Double(), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("opened_at", Time, nullable=False),
    sa.Column("risk", sa.Double(), nullable=False),
    sa.Column("escalated", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("assignee", Name),
    sa.Column("outcome", sa.String(16)),
    sa.Column("lead_time_hours", sa.Double()),
    sa.Column("closed_at", Time),
    sa.Column("updated_at", Time, nullable=False),
    sa.Index("ix_fleet_alerts_status", "status"),
    sa.Index("ix_fleet_alerts_pump", "pump_id", "opened_at"),
    # one alert not closed per pump and horizon: de-duplicated by the database itself
    sa.Index(
        "uq_fleet_alerts_live",
        "pump_id",
        "horizon_hours",
        unique=True,
        sqlite_where=sa.text("status != 'closed'"),
        postgresql_where=sa.text("status != 'closed'"),
    ),
)

alert_events = sa.Table(
    "fleet_alert_events",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("alert_id", Id, sa.ForeignKey("fleet_alerts.id"), nullable=False),
    sa.Column("at", Time, nullable=False),
    sa.Column("event", sa.String(32), nullable=False),
    sa.Column("by", Name),
    sa.Column("note", sa.Text()),
    sa.Index("ix_fleet_alert_events_alert", "alert_id", "id"),
)

failures = sa.Table(
    "fleet_failures",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("pump_id", Name, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),  # failure | maintenance
    sa.Column("at", Time, nullable=False),
    sa.Column("missed", sa.Boolean(), nullable=False),
    sa.Column("received_at", Time, nullable=False),
    sa.Index("ix_fleet_failures_pump", "pump_id", "at"),
)

devices = sa.Table(
    "fleet_devices",
    metadata,
    sa.Column("device_id", Name, primary_key=True),
    sa.Column("site", Name),
    sa.Column("pump_class", Name),
    sa.Column("last_upload_at", Time, nullable=False),
)

outbox = sa.Table(
    "fleet_outbox",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.String(64), nullable=False),
    sa.Column("event", sa.String(32), nullable=False),
    sa.Column("alert_id", Id, nullable=False),
    sa.Column("url", sa.Text(), nullable=False),
    sa.Column("body", sa.Text(), nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("next_attempt_at", Time, nullable=False),
    sa.Column("delivered_at", Time),
    sa.Column("last_error", sa.Text()),
    sa.Index("ix_fleet_outbox_due", "delivered_at", "next_attempt_at"),
)

MIGRATIONS = Path(__file__).parent / "migrations"
_MIGRATED: set[str] = set()
_LOCK = threading.Lock()


def default_url(workspace: str | Path) -> str:
    """The default fleet database: ``fleet.db`` (SQLite) in the workspace folder."""
    return f"sqlite:///{Path(workspace) / 'fleet.db'}"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL: readers (the API) do not wait for the writer (the feed); a busy writer is
    # waited for rather than refused
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
    # transactions begin by BEGIN IMMEDIATE (below), not the driver's deferred BEGIN: a
    # transaction that read before it writes cannot then find the snapshot it read
    # outdated by another writer (SQLITE_BUSY_SNAPSHOT, which no timeout waits out)
    dbapi_connection.isolation_level = None


def _sqlite_begin(connection: sa.Connection) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def engine_for(url: str) -> sa.Engine:
    """An engine for ``url``, its schema migrated to the newest (once per process)."""
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        sa.event.listen(engine, "begin", _sqlite_begin)
    else:
        engine = sa.create_engine(url, pool_pre_ping=True)
    with _LOCK:
        if url not in _MIGRATED:
            migrate(engine)
            _MIGRATED.add(url)
    return engine


def migrate(engine: sa.Engine, revision: str = "head") -> None:
    """Bring the database to ``revision`` by the shipped Alembic migrations."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)
    log.info("fleet database %s at %s", engine.url.render_as_string(), revision)
