"""Bundle updates on the device: which bundle is current, the previous one kept, and the
decisions — accept a candidate, judge a new model on probation — as pure functions.

A bundle is told apart by its :class:`~pumpfleet.bundle.BundleId`: RUL model version and
anomaly (health) model version, if any. A bundle with the installed RUL model and a newer
health model is an update like one with a newer RUL model. An older bundle is taken only
as a rollback made in the registry: its signed manifest lists the versions rolled back
there (``rolled_back``: {"rul": [...], "anomaly": [...]}), and the installed bundle's are
among them (:func:`rolls_back`).

Layout under ``<state_dir>/bundles``: ``<id>/bundle.pfbundle`` per installed bundle
(``v5``, ``v5-anomaly-v3``) and ``state.json`` ({"current", "previous", "bad",
"probation"}: bundle ids), replaced atomically (write, fsync, rename), so a switch or a
rollback is one rename. An agent from before health-model updates wrote RUL versions
(numbers) and kept every bundle in ``v<N>``: :meth:`State.from_json` reads that too.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_agent import __version__ as AGENT_VERSION
from pumpfleet.bundle import BundleId
from pumpfleet.errors import BundleError
from pumpfleet.manifest import BundleManifest


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".") if p.isdigit())


def _health(version: int | None) -> str:
    return "none" if version is None else f"v{version}"


def not_newer(candidate: BundleId, installed: BundleId) -> str | None:
    """Why ``candidate`` is not newer than ``installed``, or None if it is: a newer RUL
    model, or the same RUL model with a newer health model (one where there was none
    included). Never an older one, whatever the cloud's champion is now: the same rule
    for either model."""
    if candidate.rul < installed.rul or (
        candidate.rul == installed.rul and candidate.anomaly is None and installed.anomaly is None
    ):
        return f"version {candidate.rul} is not newer than the installed {installed.rul}"
    if candidate.rul == installed.rul and (
        candidate.anomaly is None
        or (installed.anomaly is not None and candidate.anomaly <= installed.anomaly)
    ):
        return (
            f"bundle {candidate} is not newer than the installed {installed}: the same RUL "
            f"model, and health model {_health(candidate.anomaly)} is not newer than "
            f"{_health(installed.anomaly)}"
        )
    return None


def rolled_back(manifest: BundleManifest) -> tuple[set[int], set[int]]:
    """The RUL and anomaly model versions a bundle's manifest says were rolled back in the
    registry (none in a bundle exported before rollbacks reached devices)."""
    found = manifest.rolled_back
    return set(found.rul), set(found.anomaly)


def rolls_back(manifest: BundleManifest, installed: BundleId) -> str | None:
    """Which of the installed bundle's models ``manifest``'s bundle rolls back: the
    bundle id to mark bad on the device (``v<N>`` for a RUL model, standing for every
    bundle of it; the exact id for a health model alone), or None."""
    rul, anomaly = rolled_back(manifest)
    if installed.rul in rul:
        return f"v{installed.rul}"
    if installed.anomaly is not None and installed.anomaly in anomaly:
        return str(installed)
    return None


def failed_before(candidate: BundleId, bad: list[str]) -> str | None:
    """Why ``candidate`` is refused as one that failed here, or None. ``v<N>`` in ``bad``
    (a bundle without a health model failed, so its RUL model did; or an older agent's
    record) stands for every bundle of RUL version N; ``v<N>-anomaly-v<M>`` for that
    bundle only, as its health model may have been the one to fail."""
    if str(candidate) in bad:
        return f"bundle {candidate} failed on this device before"
    if f"v{candidate.rul}" in bad:
        return f"version {candidate.rul} failed on this device before"
    return None


def refuse_reason(
    manifest: BundleManifest,
    current: BundleManifest | None,
    bad: list[str],
    agent_version: str = AGENT_VERSION,
) -> str | None:
    """Why a verified bundle may not replace the current one, or None if it may: another
    pump class, a bundle not newer (:func:`not_newer`), one that failed here before, or
    an agent too old for it."""
    candidate = BundleId.of(manifest)
    if current is not None:
        if manifest.pump_class != current.pump_class:
            return (
                f"bundle is for class {manifest.pump_class}, "
                f"this device scores {current.pump_class}"
            )
        installed = BundleId.of(current)
        back = rolls_back(manifest, installed)
        if back is None and (why := not_newer(candidate, installed)):
            return why
    if why := failed_before(candidate, bad):
        return why
    need = manifest.min_agent_version
    if _version_tuple(need) > _version_tuple(agent_version):
        return f"bundle needs agent {need} or newer, this is {agent_version}"
    return None


@dataclass(frozen=True)
class Policy:
    """When a new model is rolled back after its switch."""

    probation_windows: int = 200
    error_rate: float = 0.05
    min_windows: int = 20


@dataclass(frozen=True)
class Probation:
    bundle: str  # the bundle id
    windows: int = 0
    errors: int = 0


def judge(
    p: Probation, windows: int, errors: int, policy: Policy
) -> tuple[Probation | None, str | None]:
    """Add a scored batch to a probation. Returns (the probation, or None once it ended)
    and, if the model must be rolled back, why."""
    p = Probation(p.bundle, p.windows + windows, p.errors + errors)
    if p.windows >= policy.min_windows and p.errors / p.windows > policy.error_rate:
        rate = p.errors / p.windows
        return None, (
            f"{p.bundle}: scoring error rate {rate:.0%} over {p.windows} windows "
            f"after the switch (limit {policy.error_rate:.0%})"
        )
    if p.windows >= policy.probation_windows:
        return None, None
    return p, None


def _order(name: str) -> tuple[int, int]:
    try:
        b = BundleId.parse(name)
    except BundleError:
        return (-1, -1)
    return (b.rul, -1 if b.anomaly is None else b.anomaly)


@dataclass
class State:
    """Installed bundles by id (``str(BundleId)``), which is also their folder's name."""

    current: str | None = None
    previous: str | None = None
    bad: list[str] = field(default_factory=list)
    probation: str | None = None  # the current bundle, while on probation

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> State:
        """A saved state; one written by an agent from before health-model updates holds
        RUL versions: N is the folder ``v<N>`` it installed into (whichever health model
        that bundle has), and a bad N stays bad for every bundle of RUL version N."""

        def name(v: int | str | None) -> str | None:
            return v if v is None or isinstance(v, str) else f"v{int(v)}"

        return cls(
            current=name(obj.get("current")),
            previous=name(obj.get("previous")),
            bad=sorted({str(name(b)) for b in obj.get("bad", [])}, key=_order),
            probation=name(obj.get("probation")),
        )


class BundleDir:
    """Installed bundles and the pointer to the current one."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    @property
    def _state_path(self) -> Path:
        return self.root / "state.json"

    def state(self) -> State:
        if not self._state_path.exists():
            return State()
        return State.from_json(json.loads(self._state_path.read_text()))

    def save(self, state: State) -> None:
        """Replace the state in one rename (after an fsync of the new file and before one
        of the folder), so a power cut leaves the old state or the new, never a mix."""
        tmp = self._state_path.with_name(".state.json.tmp")
        with open(tmp, "w") as f:
            json.dump(state.__dict__, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._state_path)
        _fsync_dir(self.root)

    def path(self, bundle: str) -> Path:
        return self.root / bundle / "bundle.pfbundle"

    def stage(self, src: Path, bundle: str) -> Path:
        """Copy a bundle in as ``<bundle>/bundle.pfbundle`` (tmp + rename)."""
        dest = self.path(bundle)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(".bundle.tmp")
        shutil.copyfile(src, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dest)
        return dest

    def switch(self, bundle: str) -> State:
        s = self.state()
        # A first model has nothing to fall back on: no probation.
        probation = bundle if s.current is not None else None
        s = State(current=bundle, previous=s.current, bad=s.bad, probation=probation)
        self.save(s)
        return s

    def end_probation(self) -> None:
        s = self.state()
        s.probation = None
        self.save(s)

    def roll_back(self) -> State:
        """Make the previous bundle current again; the failed one is marked bad and its
        files removed."""
        s = self.state()
        failed = s.current
        s = State(
            current=s.previous,
            previous=None,
            bad=sorted({*s.bad, *([failed] if failed is not None else [])}, key=_order),
            probation=None,
        )
        self.save(s)
        if failed is not None:
            shutil.rmtree(self.path(failed).parent, ignore_errors=True)
        return s

    def mark_bad(self, bundle: str) -> None:
        s = self.state()
        s.bad = sorted({*s.bad, bundle}, key=_order)
        self.save(s)
        if bundle != s.current and bundle != s.previous:
            shutil.rmtree(self.path(bundle).parent, ignore_errors=True)

    def prune(self) -> None:
        """Remove installed bundles other than the current and the previous."""
        s = self.state()
        keep = {b for b in (s.current, s.previous) if b is not None}
        for d in self.root.iterdir():
            if d.is_dir() and d.name.startswith("v") and d.name not in keep:
                shutil.rmtree(d, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
