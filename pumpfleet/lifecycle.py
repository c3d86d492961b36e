"""Who serves: promotion and rollback move the ``champion`` alias of ``pumpfleet-<class>``
(the RUL model) or ``pumpfleet-<class>-anomaly`` (the health model), and every move
(and every rejection by the gates) leaves an audit record of who, when and why.

Aliases: ``champion`` (served and exported), ``previous-champion`` (where a rollback
returns to), ``challenger`` (the latest trained). An audit record is a version tag
``audit.<UTC time>.<action>`` holding JSON, on the version the event made champion (or
rejected), and a run in the MLflow experiment ``pumpfleet-audit``, to query across
classes. The registry calls go through :class:`~pumpfleet.registry.Registry`; the clock
and the user are passed in.
"""

from __future__ import annotations

import getpass
import json
import logging
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ValidationError

from pumpfleet.errors import RegistryError
from pumpfleet.registry import CHAMPION, ModelKind, Registry, kind_model_name
from pumpfleet.settings import Settings
from pumpfleet.tables import format_table

log = logging.getLogger(__name__)

PREVIOUS_CHAMPION = "previous-champion"
AUDIT_EXPERIMENT = "pumpfleet-audit"
AUDIT_PREFIX = "audit."
# On a version that was rolled back: evaluate will not promote it again by itself.
ROLLED_BACK_TAG = "lifecycle.rolled_back"
# MLflow caps a model version tag's value at 5000 characters.
MAX_WHY = 2000

Action = Literal[
    "promote", "force-promote", "rollback", "reject", "deploy-staging", "deploy-production"
]


class AuditRecord(BaseModel):
    action: Action
    pump_class: str
    version: str  # the version this event made champion (or rejected)
    previous: str | None  # the champion before it
    who: str
    when: datetime
    why: str
    source: str  # what made the move: "evaluate" or "cli"
    kind: ModelKind = "rul"  # which of the class's models moved


def current_user(settings: Settings | None = None) -> str:
    """Who is acting: ``settings.user`` (``PUMPFLEET_USER``: a CI job, a service account)
    if set, else the OS user. Without ``settings``, they are read now (not the cached
    process settings), so a caller that has none sees the variable as it is."""
    user = (settings if settings is not None else Settings()).user
    if user:
        return user
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (some containers)
        return "unknown"


def utc_now() -> datetime:
    return datetime.now(UTC)


def check_class(registry: Registry, pump_class: str, kind: ModelKind = "rul") -> str:
    """The registered name of ``pump_class``'s ``kind`` model; RegistryError if there is
    none."""
    classes = registry.classes() if kind == "rul" else registry.anomaly_classes()
    if pump_class not in classes:
        train = "pumpfleet train" + (" --kind anomaly" if kind == "anomaly" else "")
        known = ", ".join(classes) or f"none yet; run `{train}`"
        what = "class" if kind == "rul" else "class for anomaly models"
        raise RegistryError(f"unknown {what} {pump_class!r} (registered: {known})")
    return kind_model_name(pump_class, kind)


def _move(registry: Registry, name: str, alias_ops: list[tuple[str, str | None]]) -> None:
    """Set (version) or delete (None) aliases in order; if one fails, put back those
    already changed, in reverse, and raise.

    MLflow writes one alias per call and has no transaction across two, so this is as
    atomic as the registry allows: each single write is atomic in its store, and a
    failure part-way is undone. The champion moves first because it is what serving and
    export read; the bookkeeping alias that lets a rollback find its way back follows,
    and a promotion whose way back could not be recorded is undone.
    """
    before = registry.aliases(name)
    done: list[str] = []
    try:
        for alias, version in alias_ops:
            if version is None:
                registry.delete_alias(name, alias)
            else:
                registry.set_alias(name, alias, version)
            done.append(alias)
    except Exception as e:  # the registry's own error type is mlflow's; undo, then re-raise
        failed = alias_ops[len(done)][0]
        try:
            for alias in reversed(done):
                if alias in before:
                    registry.set_alias(name, alias, before[alias])
                else:
                    registry.delete_alias(name, alias)
        except Exception as undo:
            raise RegistryError(
                f"{name}: setting {failed} failed ({e}) and undoing {', '.join(done)} failed "
                f"too ({undo}); aliases now {registry.aliases(name)}, were {before}"
            ) from undo
        raise RegistryError(f"{name}: setting {failed} failed, nothing changed: {e}") from e


def write_record(registry: Registry, record: AuditRecord) -> None:
    """Write ``record`` as a tag on its version and as a run in the audit experiment."""
    name = kind_model_name(record.pump_class, record.kind)
    suffix = "" if record.kind == "rul" else f" {record.kind}"
    stamp = record.when.astimezone(UTC).strftime("%Y-%m-%dT%H-%M-%S.%fZ")
    if len(record.why) > MAX_WHY:
        record = record.model_copy(update={"why": record.why[: MAX_WHY - 1] + "…"})
    registry.set_version_tags(
        name, record.version, {f"{AUDIT_PREFIX}{stamp}.{record.action}": record.model_dump_json()}
    )
    run_id = registry.start_run(
        AUDIT_EXPERIMENT,
        f"{record.action} {record.pump_class}{suffix} v{record.version}",
        tags={
            "mlflow.user": record.who,
            "pump_class": record.pump_class,
            "action": record.action,
            "version": record.version,
            "previous": record.previous or "",
            "why": record.why,
            "source": record.source,
            "kind": record.kind,
            "when": record.when.isoformat(),
        },
    )
    registry.end_run(run_id)
    log.info(
        "%s %s v%s by %s: %s",
        record.action,
        record.pump_class,
        record.version,
        record.who,
        record.why,
    )


def promote(
    registry: Registry,
    pump_class: str,
    version: str,
    *,
    who: str,
    why: str,
    now: datetime,
    forced: bool = False,
    source: str = "cli",
    kind: ModelKind = "rul",
) -> AuditRecord:
    """Make ``version`` the champion and the old champion ``previous-champion``; record
    it. The gates are the caller's business (see :mod:`pumpfleet.promotion`)."""
    name = check_class(registry, pump_class, kind)
    registry.version_tags(name, version)  # an unknown version is refused here
    old = registry.version_by_alias(name, CHAMPION)
    if old == version:
        raise RegistryError(f"{pump_class}: v{version} is the champion already")
    ops: list[tuple[str, str | None]] = [(CHAMPION, version)]
    if old is not None:
        ops.append((PREVIOUS_CHAMPION, old))
    _move(registry, name, ops)
    record = AuditRecord(
        action="force-promote" if forced else "promote",
        pump_class=pump_class,
        version=version,
        previous=old,
        who=who,
        when=now,
        why=why,
        source=source,
        kind=kind,
    )
    write_record(registry, record)
    return record


def rollback(
    registry: Registry,
    pump_class: str,
    *,
    who: str,
    why: str,
    now: datetime,
    kind: ModelKind = "rul",
) -> AuditRecord:
    """Return the champion alias to ``previous-champion``; record it.

    ``previous-champion`` is then removed: one rollback undoes one promotion (a second
    would otherwise return to the same version, or to the one just rolled back), and
    ``promote --version`` goes anywhere else in the history. The version rolled back is
    tagged so that ``evaluate`` never promotes it again by itself.
    """
    name = check_class(registry, pump_class, kind)
    prev = registry.version_by_alias(name, PREVIOUS_CHAMPION)
    if prev is None:
        raise RegistryError(f"{pump_class}: no previous champion to roll back to")
    cur = registry.version_by_alias(name, CHAMPION)
    if cur == prev:
        raise RegistryError(f"{pump_class}: v{prev} is the champion already")
    _move(registry, name, [(CHAMPION, prev), (PREVIOUS_CHAMPION, None)])
    record = AuditRecord(
        action="rollback",
        pump_class=pump_class,
        version=prev,
        previous=cur,
        who=who,
        when=now,
        why=why,
        source="cli",
        kind=kind,
    )
    if cur is not None:
        mark = {"when": now.isoformat(), "who": who, "why": why[:MAX_WHY]}
        registry.set_version_tags(name, cur, {ROLLED_BACK_TAG: json.dumps(mark)})
    write_record(registry, record)
    return record


def record_rejection(
    registry: Registry,
    pump_class: str,
    version: str,
    *,
    who: str,
    why: str,
    now: datetime,
    kind: ModelKind = "rul",
) -> AuditRecord:
    """Record that the gates kept ``version`` out (the champion does not move)."""
    record = AuditRecord(
        action="reject",
        pump_class=pump_class,
        version=version,
        previous=registry.version_by_alias(kind_model_name(pump_class, kind), CHAMPION),
        who=who,
        when=now,
        why=why,
        source="evaluate",
        kind=kind,
    )
    write_record(registry, record)
    return record


def rolled_back(tags: dict[str, str]) -> str | None:
    """Why a version was rolled back (from its tags), or None if it never was."""
    raw = tags.get(ROLLED_BACK_TAG)
    if raw is None:
        return None
    try:
        mark = json.loads(raw)
        return f"rolled back {mark['when'][:19]}Z by {mark['who']}: {mark['why']}"
    except (ValueError, KeyError, TypeError):
        return "rolled back"


def history(registry: Registry, pump_class: str, kind: ModelKind = "rul") -> list[AuditRecord]:
    """Every audit record of a class's ``kind`` model, oldest first."""
    name = check_class(registry, pump_class, kind)
    records = []
    for version, tags in registry.versions(name).items():
        for key, value in tags.items():
            if not key.startswith(AUDIT_PREFIX):
                continue
            try:
                records.append(AuditRecord.model_validate_json(value))
            except ValidationError:
                log.warning("%s v%s: unreadable audit tag %s", name, version, key)
    return sorted(records, key=lambda r: r.when)


def format_history(records: list[AuditRecord], aliases: dict[str, str], width: int = 90) -> str:
    """A class's audit trail as a table, under a line naming its current aliases."""
    order = [CHAMPION, PREVIOUS_CHAMPION, "challenger"]
    named = sorted(aliases, key=lambda a: (order.index(a) if a in order else len(order), a))
    head = "aliases: " + (", ".join(f"{a} v{aliases[a]}" for a in named) or "none")
    if not records:
        return f"{head}\nno promotion, rollback or rejection recorded"

    def cut(text: str) -> str:
        text = " ".join(text.split())
        return text if len(text) <= width else text[: width - 1] + "…"

    rows = [
        [
            r.when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
            r.action,
            f"v{r.version}",
            f"v{r.previous}" if r.previous else "-",
            r.who,
            cut(r.why),
        ]
        for r in records
    ]
    table = format_table(["when (UTC)", "action", "version", "champion before", "who", "why"], rows)
    return f"{head}\n{table}"
