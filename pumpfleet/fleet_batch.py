"""How :meth:`pumpfleet.fleet_store.FleetDB.ingest` writes a batch cheaply: statements
compiled once per database and run by the driver's own executemany on plain values
(each value through its column type's bind processor, as SQLAlchemy would pass it, so
the values stored are the same), a batch's ids looked up through one parameter rather
than one per id, and the state of each pump of a batch as a small record.

SQLAlchemy's executemany of dictionaries builds and processes every row's parameters
again, and an ``IN`` of a thousand ids renders a thousand parameters at each execution;
for a batch of a thousand windows that was most of its cost. The batch's reads of its
pumps and their live alerts are compiled once too (:class:`Lookup`), rather than built
and looked up in SQLAlchemy's statement cache for each chunk of ids, with a row object
per pump.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from pumpfleet import fleet_views as views
from pumpfleet.fleet_schema import alerts, pumps, scores

if TYPE_CHECKING:
    from pumpfleet.fleet_store import ScoredRow

# a window's reading, as the score history and a pump's row both hold it (after the time)
READING = ("rul_hours", "failure_probability", "model_version", "arm", "health_score",
           "anomaly")  # fmt: skip
SCORES = ("pump_id", "at", *READING)
# what each window of a pump changes, and what changes only now and then
HOT = ("last_reading_at", *READING, "above", "below", "updated_at")
STICKY = ("pump_class", "site", "device_id", "threshold", "horizon_hours")
PUMP = ("pump_id", *STICKY, *HOT, "drivers")


class Prepared:
    """``stmt`` (its parameters named ``names``, of the columns ``types``) compiled for
    ``dialect`` once; :meth:`run` passes rows of values in ``names`` order straight to
    the driver's executemany."""

    def __init__(
        self, stmt: sa.Executable, names: Sequence[str], types: dict[str, Any], dialect: Any
    ) -> None:
        compiled = stmt.compile(dialect=dialect)  # type: ignore[attr-defined]
        self.sql: str = compiled.string
        self.names = list(names)
        at = {n: i for i, n in enumerate(self.names)}
        order = compiled.positiontup
        self.order = None if order is None else [at[n] for n in order]
        processors = [types[n].dialect_impl(dialect).bind_processor(dialect) for n in names]
        self.processors = [(i, p) for i, p in enumerate(processors) if p is not None]

    def run(self, conn: sa.Connection, rows: list[list[Any]]) -> None:
        if not rows:
            return
        for i, process in self.processors:
            for r in rows:
                r[i] = process(r[i])
        if self.order is None:  # named parameters (psycopg)
            params: list[Any] = [dict(zip(self.names, r, strict=True)) for r in rows]
        elif self.order == list(range(len(self.names))):
            params = [tuple(r) for r in rows]
        else:
            params = [tuple([r[i] for i in self.order]) for r in rows]
        conn.exec_driver_sql(self.sql, params)


def statements(dialect: Any) -> dict[str, Prepared]:
    """The batch's statements for ``dialect``: the score history's insert, a new pump's
    insert, and a known pump's updates (each window's columns, the columns that change
    only now and then, its drivers), and a live alert's risk."""

    def update(table: sa.Table, key: str, cols: Sequence[str]) -> sa.Executable:
        values: dict[str, Any] = {c: sa.bindparam(c) for c in cols}
        return table.update().where(table.c[key] == sa.bindparam("b_key")).values(values)

    def types(table: sa.Table, cols: Sequence[str]) -> dict[str, Any]:
        return {c: table.c[c].type for c in cols}

    def insert(table: sa.Table, cols: Sequence[str]) -> Prepared:
        stmt = table.insert().values({c: sa.bindparam(c) for c in cols})
        return Prepared(stmt, cols, types(table, cols), dialect)

    def updating(table: sa.Table, key: str, cols: Sequence[str]) -> Prepared:
        ty = types(table, cols) | {"b_key": table.c[key].type}
        return Prepared(update(table, key, cols), [*cols, "b_key"], ty, dialect)

    return {
        "scores": insert(scores, SCORES),
        "new pump": insert(pumps, PUMP),
        "hot": updating(pumps, "pump_id", HOT),
        "sticky": updating(pumps, "pump_id", STICKY),
        "drivers": updating(pumps, "pump_id", ("drivers",)),
        "risk": updating(alerts, "id", ("risk", "updated_at")),
    }


class Lookup:
    """A SELECT by a chunk of ids (:func:`among`'s ``ids`` parameter), compiled for
    ``dialect`` once; :meth:`rows` runs it by the driver. Its columns must need no result
    processing (strings, numbers; a boolean comes back as the driver gives it, 0 or 1 on
    SQLite)."""

    def __init__(self, stmt: sa.Select[Any], dialect: Any) -> None:
        compiled = stmt.compile(dialect=dialect)
        self.sql: str = compiled.string
        self.dialect = dialect
        self.params = compiled.construct_params()  # the statement's own values, and ids
        self.order = compiled.positiontup  # None: named parameters (psycopg)

    def rows(self, conn: sa.Connection, ids: list[str]) -> Sequence[Sequence[Any]]:
        params = {**self.params, "ids": ids_value(ids, self.dialect)}
        args: Any = params if self.order is None else tuple(params[n] for n in self.order)
        return conn.exec_driver_sql(self.sql, args).fetchall()


def lookups(dialect: Any) -> tuple[Lookup, Lookup]:
    """A batch's reads for ``dialect``: its known pumps (the columns
    :class:`PumpState` starts from, and whether the pump has no drivers stored) and the
    live alerts of its pumps, each in one order (on PostgreSQL locked, in that order, for
    the batch's transaction)."""
    p, a = pumps.c, alerts.c
    cols = (p.pump_id, p.pump_class, p.site, p.device_id, p.last_reading_at, p.threshold,
            p.horizon_hours, p.above, p.below, p.drivers.is_(None))  # fmt: skip
    known = sa.select(*cols).where(among(p.pump_id, dialect)).order_by(p.pump_id)
    live = sa.select(a.id, a.pump_id, a.horizon_hours, a.status, a.escalated, a.risk)
    live = live.where(views.LIVE, among(a.pump_id, dialect)).order_by(a.id)
    return (
        Lookup(known.with_for_update(), dialect),
        Lookup(live.with_for_update(), dialect),
    )


def among(column: sa.ColumnElement[Any], dialect: Any) -> sa.ColumnElement[bool]:
    """``column IN`` a chunk of ids through one parameter, ``ids`` (its value:
    :func:`ids_value`): a JSON array on SQLite, an array on PostgreSQL (an expanding ``IN``
    renders one parameter per id at every execution)."""
    if dialect.name == "sqlite":
        ids = sa.bindparam("ids", None, type_=sa.String())
        return column.in_(sa.select(sa.func.json_each(ids).table_valued("value").c.value))
    if dialect.name == "postgresql":
        return column == sa.any_(sa.bindparam("ids", None, type_=postgresql.ARRAY(sa.String())))
    raise ValueError(f"the fleet database runs on SQLite or PostgreSQL, not {dialect.name}")


def ids_value(ids: list[str], dialect: Any) -> Any:
    """The value of :func:`among`'s ``ids`` parameter for ``dialect``."""
    return json.dumps(ids) if dialect.name == "sqlite" else ids


def reading(r: ScoredRow) -> list[Any]:
    """``r``'s time and its :data:`READING` values, in that order."""
    return [r.at, r.rul_hours, r.failure_probability, r.model_version, r.arm, r.health_score,
            r.anomaly]  # fmt: skip


@dataclass(slots=True)
class PumpState:
    """A pump's state as the batch goes (the stored one first, where it is known):
    ``newest`` the batch's window that became its newest (None: none did), ``drivers`` the
    newest drivers the batch gave (None: none), ``was`` its sticky columns as stored."""

    pump_class: str
    site: str | None
    device_id: str | None
    last_at: float | None
    threshold: float | None
    horizon: float | None
    above: int
    below: int
    was: tuple[Any, ...] | None = None  # None: a new pump
    no_drivers: bool = False  # stored with none (NULL)
    newest: ScoredRow | None = None
    drivers: list[dict[str, Any]] | None = None

    def sticky(self) -> tuple[Any, ...]:
        return (self.pump_class, self.site, self.device_id, self.threshold, self.horizon)
