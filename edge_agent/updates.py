"""Bundle updates on the device: which bundle is current, the previous one kept, and the
decisions — accept a candidate, judge a new model on probation — as pure functions.

Layout under ``<state_dir>/bundles``: ``v<N>/bundle.pfbundle`` per installed version
and ``state.json`` ({"current", "previous", "bad", "probation"}), replaced atomically
(write, fsync, rename), so a switch or a rollback is one rename.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_agent import __version__ as AGENT_VERSION


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".") if p.isdigit())


def refuse_reason(
    manifest: dict[str, Any],
    current: dict[str, Any] | None,
    bad: list[int],
    agent_version: str = AGENT_VERSION,
) -> str | None:
    """Why a verified bundle may not replace the current one, or None if it may: another
    pump class, a version not newer, a version that failed here before, or an agent too
    old for it."""
    version = int(manifest["model_version"])
    if current is not None:
        if manifest["pump_class"] != current["pump_class"]:
            return (
                f"bundle is for class {manifest['pump_class']}, "
                f"this device scores {current['pump_class']}"
            )
        if version <= int(current["model_version"]):
            return f"version {version} is not newer than the installed {current['model_version']}"
    if version in bad:
        return f"version {version} failed on this device before"
    need = str(manifest.get("min_agent_version", "0"))
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
    version: int
    windows: int = 0
    errors: int = 0


def judge(
    p: Probation, windows: int, errors: int, policy: Policy
) -> tuple[Probation | None, str | None]:
    """Add a scored batch to a probation. Returns (the probation, or None once it ended)
    and, if the model must be rolled back, why."""
    p = Probation(p.version, p.windows + windows, p.errors + errors)
    if p.windows >= policy.min_windows and p.errors / p.windows > policy.error_rate:
        rate = p.errors / p.windows
        return None, (
            f"v{p.version}: scoring error rate {rate:.0%} over {p.windows} windows "
            f"after the switch (limit {policy.error_rate:.0%})"
        )
    if p.windows >= policy.probation_windows:
        return None, None
    return p, None


@dataclass
class State:
    current: int | None = None
    previous: int | None = None
    bad: list[int] = field(default_factory=list)
    probation: int | None = None  # the current version, while on probation


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
        return State(**json.loads(self._state_path.read_text()))

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

    def path(self, version: int) -> Path:
        return self.root / f"v{version}" / "bundle.pfbundle"

    def stage(self, src: Path, version: int) -> Path:
        """Copy a bundle in as ``v<version>`` (tmp + rename)."""
        dest = self.path(version)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(".bundle.tmp")
        shutil.copyfile(src, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dest)
        return dest

    def switch(self, version: int) -> State:
        s = self.state()
        # A first model has nothing to fall back on: no probation.
        probation = version if s.current is not None else None
        s = State(current=version, previous=s.current, bad=s.bad, probation=probation)
        self.save(s)
        return s

    def end_probation(self) -> None:
        s = self.state()
        s.probation = None
        self.save(s)

    def roll_back(self) -> State:
        """Make the previous bundle current again; the failed version is marked bad and
        its files removed."""
        s = self.state()
        failed = s.current
        s = State(
            current=s.previous,
            previous=None,
            bad=sorted({*s.bad, *([failed] if failed is not None else [])}),
            probation=None,
        )
        self.save(s)
        if failed is not None:
            shutil.rmtree(self.path(failed).parent, ignore_errors=True)
        return s

    def mark_bad(self, version: int) -> None:
        s = self.state()
        s.bad = sorted({*s.bad, version})
        self.save(s)
        if version != s.current and version != s.previous:
            shutil.rmtree(self.path(version).parent, ignore_errors=True)

    def prune(self) -> None:
        """Remove installed versions other than the current and the previous."""
        s = self.state()
        keep = {f"v{v}" for v in (s.current, s.previous) if v is not None}
        for d in self.root.iterdir():
            if d.is_dir() and d.name.startswith("v") and d.name not in keep:
                shutil.rmtree(d, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
