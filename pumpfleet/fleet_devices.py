"""The fleet as the cloud sees it: each device's latest report (the health it uploads,
``<log>/edge/<device>/health.json``), the rollouts recorded in the workspace
(``<workspace>/rollouts.json``), advanced by the pure policy (:mod:`pumpfleet.rollout`)
whenever they are read, and the signed assignment a device pulls.

What the HTTP routes call (``GET /v1/devices``, ``GET /v1/edge/assignment``, ``GET
/v1/edge/bundles/...``) and what ``pumpfleet edge rollout`` calls: one implementation.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from pumpfleet import assignment, rollout, storage, trust, trust_repo
from pumpfleet.bundle import BundleId, read_bundle
from pumpfleet.errors import ConflictError, InputError
from pumpfleet.names import plain_name

log = logging.getLogger(__name__)

FILE = "rollouts.json"
ASSIGNMENT_TTL_SECONDS = 86_400.0


class Entry(BaseModel):
    plan: rollout.Plan
    state: rollout.State


class Book(BaseModel):
    """Every class's current rollout, and the serial that versions assignments."""

    serial: int = 1
    rollouts: dict[str, Entry] = Field(default_factory=dict)
    finished: list[Entry] = Field(default_factory=list)


def load(home: Path) -> Book:
    path = Path(home) / FILE
    return Book.model_validate(storage.read_json(path)) if path.exists() else Book()


def save(home: Path, book: Book) -> None:
    storage.write_json(Path(home) / FILE, book.model_dump(mode="json"))


# --- what the devices said -------------------------------------------------------------


def report_of(device_id: str, health: dict[str, Any], seen: float) -> rollout.Report:
    counters = health.get("counters") or {}
    return rollout.Report(
        device_id=device_id,
        pump_class=health.get("pump_class"),
        site=health.get("site"),
        bundle=health.get("bundle"),
        bad_bundles=list(health.get("bad_bundles") or []),
        self_test=health.get("self_test"),
        alerts=int(counters.get("alerts", 0)),
        scored=int(counters.get("scored", 0)),
        upload_error=bool(health.get("last_upload_error")),
        last_seen=seen,
    )


def reports(log_root: Path) -> dict[str, rollout.Report]:
    """Each device's latest report; one that cannot be read is left out (and logged)."""
    out = {}
    base = Path(log_root) / "edge"
    for path in sorted(base.glob("*/health.json")) if base.is_dir() else []:
        device = path.parent.name
        try:
            out[device] = report_of(device, json.loads(path.read_text()), path.stat().st_mtime)
        except (OSError, ValueError, TypeError, ValidationError) as e:
            log.warning("%s: health report unreadable: %s", device, e)
    return out


# --- rollouts ------------------------------------------------------------------------------


def target(path: Path, public_keys: list[str], threshold: int = 1) -> rollout.Target:
    """A bundle file as a rollout target (verified as a device will)."""
    b = read_bundle(path, public_keys, threshold)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return rollout.Target(
        bundle=str(BundleId.of(b.manifest)),
        sha256=digest,
        release=b.manifest.release,
        file=str(path.resolve()),
    )


def find_bundle(folder: Path, bundle_id: str, public_keys: list[str]) -> rollout.Target | None:
    """The bundle file of that id under ``folder`` (the newest release), if any."""
    found = []
    for p in folder.glob("*.pfbundle") if folder.is_dir() else []:
        try:
            t = target(p, public_keys)
        except (OSError, ValueError) as e:
            log.warning("%s: not a bundle here: %s", p, e)
            continue
        if t.bundle == bundle_id:
            found.append(t)
    return max(found, key=lambda t: t.release or 0) if found else None


def start(home: Path, log_root: Path, plan: rollout.Plan, now: float) -> Entry:
    """Record a new rollout for ``plan.pump_class``; ConflictError if one is running."""
    book = load(home)
    running = book.rollouts.get(plan.pump_class)
    if running is not None and running.state.status == "running":
        raise ConflictError(
            f"{plan.pump_class}: rollout {running.plan.rollout_id} is running; halt it first"
        )
    found = reports(log_root)
    if not any(r.pump_class == plan.pump_class for r in found.values()):
        raise InputError(f"--class {plan.pump_class}: no device of this class has reported")
    if running is not None:
        book.finished.append(running)
    entry = Entry(plan=plan, state=rollout.start(plan, found, now))
    book.rollouts[plan.pump_class] = entry
    book.serial += 1
    save(home, book)
    return entry


def previous_bundle(log_root: Path, pump_class: str) -> str | None:
    """The bundle most of the class's devices run now."""
    running = Counter(
        r.bundle for r in reports(log_root).values() if r.pump_class == pump_class and r.bundle
    )
    return running.most_common(1)[0][0] if running else None


def tick(home: Path, log_root: Path, now: float) -> list[str]:
    """Advance every running rollout by the policy; what happened, per class."""
    book = load(home)
    found = reports(log_root)
    said: list[str] = []
    changed = False
    for cls, entry in book.rollouts.items():
        state, events = rollout.advance(entry.plan, entry.state, found, now)
        if state != entry.state:  # devices adopted, a wave began soaking, ...
            book.rollouts[cls] = Entry(plan=entry.plan, state=state)
            changed = True
        said += [f"{cls} {entry.plan.rollout_id}: {e}" for e in events]
    if said:  # what devices are assigned changed: a new version of every assignment
        book.serial += 1
    if changed:
        save(home, book)
        for line in said:
            log.info("rollout %s", line)
    return said


def set_status(home: Path, pump_class: str, halt: bool, reason: str, now: float) -> Entry:
    """Halt (by hand) or resume a class's rollout."""
    book = load(home)
    entry = book.rollouts.get(pump_class)
    if entry is None:
        raise InputError(f"--class {pump_class}: no rollout")
    want, was = ("halted", "running") if halt else ("running", "halted")
    if entry.state.status != was:
        raise ConflictError(
            f"{pump_class}: rollout {entry.plan.rollout_id} is {entry.state.status}"
        )
    state = entry.state.model_copy(
        update={
            "status": want,
            "reason": reason if halt else None,
            "ready_since": None,
            "events": [*entry.state.events, {"at": now, "what": f"{want} by hand: {reason}"}],
        }
    )
    book.rollouts[pump_class] = Entry(plan=entry.plan, state=state)
    book.serial += 1
    save(home, book)
    return book.rollouts[pump_class]


# --- what a device pulls --------------------------------------------------------------------


def bundle_url(pump_class: str, t: rollout.Target) -> str:
    return f"/v1/edge/bundles/{pump_class}/{t.bundle}"


def assignment_of(
    book: Book, report: rollout.Report | None, device_id: str, now: float
) -> assignment.Assignment:
    """The (unsigned) assignment of one device under the book's rollouts."""
    cls = report.pump_class if report is not None else None
    entry = book.rollouts.get(cls) if cls is not None else None
    chosen, back = rollout.assigned(entry.plan, entry.state, device_id) if entry else (None, False)
    expires = datetime.fromtimestamp(now, UTC) + timedelta(seconds=ASSIGNMENT_TTL_SECONDS)
    return assignment.Assignment(
        device_id=device_id,
        pump_class=cls,
        version=book.serial,
        expires=trust.stamp(expires),
        bundle=chosen.bundle if chosen else None,
        sha256=chosen.sha256 if chosen else None,
        release=chosen.release if chosen else None,
        url=bundle_url(cls, chosen) if chosen and cls else None,
        rollout=entry.plan.rollout_id if entry else None,
        wave=entry.state.members.get(device_id) if entry else None,
        rollback=back,
    )


def pull(
    home: Path,
    log_root: Path,
    device_id: str,
    root_version: int,
    signing_keys: list[Any],
    signing_public: str,
    now: float,
) -> dict[str, Any]:
    """What ``GET /v1/edge/assignment`` answers a device: the rollouts advanced, its
    signed assignment, and the roots newer than the one it holds."""
    plain_name(device_id)
    tick(home, log_root, now)
    book = load(home)
    root = trust_repo.current(home, signing_public)
    keys = trust_repo.keys_for(root, "assignment", signing_keys)
    if len(keys) < root.threshold("assignment"):
        raise InputError(
            f"the assignment role needs {root.threshold('assignment')} key(s), "
            f"{len(keys)} held here"
        )
    a = assignment_of(book, reports(log_root).get(device_id), device_id, now)
    return {
        "assignment": assignment.sign(a, keys),
        "roots": trust_repo.after(home, root_version),
    }


def bundle_file(home: Path, pump_class: str, bundle: str) -> Path:
    """The file of a bundle a rollout of ``pump_class`` hands out (InputError: none)."""
    book = load(home)
    entries = [e for e in [book.rollouts.get(pump_class), *book.finished] if e is not None]
    for e in entries:
        if e.plan.pump_class != pump_class:
            continue
        for t in (e.plan.target, e.plan.previous):
            if t is not None and t.bundle == bundle:
                return Path(t.file)
    raise InputError(f"no rollout of {pump_class} hands out {bundle}")


def devices(home: Path, log_root: Path, now: float) -> list[dict[str, Any]]:
    """``GET /v1/devices``: each device's class, site, bundle, when last seen, and where
    it stands in its class's rollout."""
    book = load(home)
    rows = []
    for d, r in sorted(reports(log_root).items()):
        entry = book.rollouts.get(r.pump_class or "")
        state = None
        if entry is not None:
            wave = entry.state.members.get(d)
            on = r.bundle == entry.plan.target.bundle
            state = {
                "rollout": entry.plan.rollout_id,
                "status": entry.state.status,
                "target": entry.plan.target.bundle,
                "wave": wave,
                "device": "on target" if on else "waiting" if wave is not None else "not yet",
            }
        rows.append(
            {
                "device_id": d,
                "pump_class": r.pump_class,
                "site": r.site,
                "bundle": r.bundle,
                "last_seen": trust.stamp(datetime.fromtimestamp(r.last_seen, UTC)),
                "seconds_since_seen": round(max(0.0, now - r.last_seen), 1),
                "rollout": state,
            }
        )
    return rows
