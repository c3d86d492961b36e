"""What this device trusts, kept across restarts (``<state_dir>/trust.json``): the newest
root it took (:mod:`pumpfleet.trust`), the highest bundle release it installed per class,
the newest assignment it took, and the last thing it refused and why.

It refuses anything older than what it trusted (a replay) or expired (a freeze), takes a
new root only as the next version signed by the old root's keys and its own, and says
what it refused in its status and uploads (:meth:`TrustStore.status`). An installed
bundle keeps scoring when it expires or its key is rotated out: expiry and the current
keys gate what is *taken*, and a bundle already installed is checked on disk against
every targets key this device has trusted.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pumpfleet import trust
from pumpfleet.errors import BundleError
from pumpfleet.manifest import BundleManifest

log = logging.getLogger(__name__)

FILE = "trust.json"


def _now() -> datetime:
    return datetime.now(UTC)


class TrustStore:
    """The device's trusted metadata, saved whole after every change (tmp + rename)."""

    def __init__(self, state_dir: Path, anchor: trust.Root) -> None:
        self.path = state_dir / FILE
        data: dict[str, Any] = json.loads(self.path.read_text()) if self.path.exists() else {}
        saved = trust.parse_root(data["root"]) if "root" in data else None
        # A root flashed anew (a newer anchor in the config) wins over an older saved one.
        self.root = saved if saved is not None and saved.version >= anchor.version else anchor
        self.targets_ever: list[str] = sorted(
            {*data.get("targets_ever", []), *self.root.role_keys("targets")}
        )
        self.releases: dict[str, int] = {k: int(v) for k, v in data.get("releases", {}).items()}
        self.assignment: dict[str, Any] | None = data.get("assignment")
        self.refused: dict[str, Any] | None = data.get("refused")

    def save(self) -> None:
        data = {
            "root": self.root.model_dump(mode="json"),
            "targets_ever": self.targets_ever,
            "releases": self.releases,
            "assignment": self.assignment,
            "refused": self.refused,
        }
        tmp = self.path.with_name(f".{FILE}.tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, self.path)

    def refuse(self, what: str, why: str, now: datetime | None = None) -> str:
        """Record (and log) a refusal; returns ``why``."""
        self.refused = {"what": what, "why": why, "at": trust.stamp(now or _now())}
        self.save()
        log.warning("refused %s: %s", what, why)
        return why

    # --- roots ---------------------------------------------------------------------------

    def take_roots(self, envelopes: list[Any]) -> list[int]:
        """Take the roots that follow the trusted one, in version order; those not newer
        are skipped, the first that does not verify stops the walk (and is refused).
        Returns the versions taken."""

        def version(e: Any) -> int:
            try:
                return int(e["signed"]["version"])
            except (KeyError, TypeError, ValueError):
                return -1

        taken = []
        for env in sorted(envelopes, key=version):
            if version(env) <= self.root.version:
                continue
            try:
                self.root = trust.next_root(self.root, env)
            except BundleError as e:
                self.refuse(f"root v{version(env)}", str(e))
                break
            taken.append(self.root.version)
            self.targets_ever = sorted({*self.targets_ever, *self.root.role_keys("targets")})
            log.info("trust: root v%d taken", self.root.version)
        if taken:
            self.save()
        return taken

    def take_root_files(self, folder: Path) -> list[int]:
        """Roots dropped in the updates folder (``*.root.json``), each moved away after."""
        found = sorted(folder.glob("*.root.json"))
        if not found:
            return []
        envs = []
        for p in found:
            try:
                envs.append(json.loads(p.read_text()))
            except ValueError:
                self.refuse(p.name, "not JSON")
        taken = self.take_roots(envs)
        done = folder / "applied"
        done.mkdir(exist_ok=True)
        for p in found:
            os.replace(p, done / p.name)
        return taken

    # --- bundles ------------------------------------------------------------------------

    def bundle_keys(self) -> tuple[list[str], int]:
        """The keys (and how many of them) that must sign a bundle to be taken now."""
        return self.root.role_keys("targets"), self.root.threshold("targets")

    def bundle_problem(self, manifest: BundleManifest, now: datetime | None = None) -> str | None:
        """Why a verified bundle may not be taken for its freshness (None: it may):
        expired, an older release than the class's last, or no release where one was
        trusted (a bundle exported before releases, replayed after them)."""
        last = self.releases.get(manifest.pump_class)
        what = f"bundle {manifest.pump_class} v{manifest.model_version}"
        if manifest.release is None:
            if last is not None:
                return (
                    f"{what} has no release number and this device trusts release {last}: "
                    "exported before freeze protection; export it again"
                )
            return None
        return trust.stale(
            f"{what} release", manifest.release, manifest.expires, last, now or _now()
        )

    def took_bundle(self, manifest: BundleManifest) -> None:
        if manifest.release is not None:
            last = self.releases.get(manifest.pump_class, 0)
            self.releases[manifest.pump_class] = max(last, manifest.release)
            self.save()

    # --- status -------------------------------------------------------------------------

    def status(self, now: datetime | None = None) -> dict[str, Any]:
        """What the device's status and uploads say of its trust."""
        now = now or _now()
        a = self.assignment
        expired = a is not None and trust.utc(a["expires"]) <= now
        return {
            "root_version": self.root.version,
            "root_expires": self.root.expires,
            "root_expired": self.root.expires is not None and trust.utc(self.root.expires) <= now,
            "bundle_releases": self.releases,
            "assignment_version": a["version"] if a else None,
            "assignment_expires": a["expires"] if a else None,
            # No fresh assignment reached the device before the last one expired: it
            # keeps its bundle, and a frozen mirror (or a long outage) shows here.
            "assignment_expired": expired,
            "refused": self.refused,
        }
