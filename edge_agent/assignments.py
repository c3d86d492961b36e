"""Pulling this device's assignment: which bundle it should run, signed by the trust
root's assignment role (:mod:`pumpfleet.assignment`). A pull works through NAT and
intermittent links: the device asks, every ``assignment_poll_seconds``.

    GET <endpoint>/v1/edge/assignment?device_id=<id>&root_version=<n>   X-API-Key: <key>
    {"assignment": {"signed": {...}, "signatures": [...]}, "roots": [<newer roots>]}

Newer roots are taken first (key rotation), then the assignment is checked (signature,
this device, not expired, not older than the last trusted: :class:`TrustStore`) and
acted on: the assigned bundle is fetched from ``<endpoint><url>``, its sha256 checked,
and installed the usual way (verified, self-tested, on probation); an assignment that
sends the device back to the bundle it ran before (a halted rollout) rolls back to it.
What happened shows in the health the device uploads (``self_test``, ``trust``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge_agent.config import AgentConfig
from edge_agent.installer import Installer
from edge_agent.trust import TrustStore
from edge_agent.uploader import API_KEY_HEADER
from pumpfleet import assignment
from pumpfleet.errors import BundleError, PumpfleetError

log = logging.getLogger(__name__)

PATH = "/v1/edge/assignment"
MAX_BUNDLE_BYTES = 512 * 2**20
RETRY_SECONDS = 30.0


class PullError(PumpfleetError):
    """The cloud did not answer the pull (unreachable, refused, or an odd answer)."""


class Puller:
    """The device's side of assignments."""

    def __init__(
        self,
        cfg: AgentConfig,
        trust: TrustStore,
        models: Installer,
        clock: Callable[[], float],
    ) -> None:
        assert cfg.endpoint is not None
        self.cfg = cfg
        self.trust = trust
        self.models = models
        self.clock = clock
        self.next_pull = 0.0
        self.tried: tuple[int, str] | None = None  # (assignment version, bundle) acted on
        self.downloads = cfg.state_dir / "downloads"
        self.last_error: str | None = None

    def _get(self, url: str) -> bytes:
        req = urllib.request.Request(url, headers={API_KEY_HEADER: self.cfg.upload_key() or ""})
        try:
            with urllib.request.urlopen(req, timeout=self.cfg.upload_timeout_seconds) as resp:
                data = resp.read(MAX_BUNDLE_BYTES + 1)
        except urllib.error.HTTPError as e:
            raise PullError(f"GET {urllib.parse.urlsplit(url).path}: HTTP {e.code}") from None
        except (urllib.error.URLError, OSError) as e:
            raise PullError(f"GET {url}: {getattr(e, 'reason', e)}") from None
        if len(data) > MAX_BUNDLE_BYTES:
            raise PullError(f"GET {url}: more than {MAX_BUNDLE_BYTES} bytes")
        return bytes(data)

    def step(self) -> bool:
        """Pull when due; whether the installed bundle changed."""
        if self.clock() < self.next_pull:
            return False
        self.next_pull = self.clock() + self.cfg.assignment_poll_seconds
        query = urllib.parse.urlencode(
            {"device_id": self.cfg.device_id, "root_version": self.trust.root.version}
        )
        try:
            answer = json.loads(self._get(f"{self.cfg.endpoint}{PATH}?{query}"))
            if not isinstance(answer, dict):
                raise PullError("the assignment answer is not an object")
        except (PullError, ValueError) as e:
            self._failed(str(e))
            return False
        self.last_error = None
        self.trust.take_roots(list(answer.get("roots") or []))
        if answer.get("assignment") is None:
            return False
        a = self.accept(answer["assignment"])
        return a is not None and self.act(a)

    def _failed(self, why: str) -> None:
        if why != self.last_error:
            log.warning("assignment pull: %s", why)
        self.last_error = why
        self.next_pull = self.clock() + min(RETRY_SECONDS, self.cfg.assignment_poll_seconds)

    def accept(self, envelope: Any, now: datetime | None = None) -> assignment.Assignment | None:
        """The assignment if this device may trust it (else refused, and said so)."""
        last = self.trust.assignment
        held = (int(last["version"]), str(last["expires"])) if last else None
        try:
            a = assignment.accept(
                envelope, self.trust.root, self.cfg.device_id, held, now or datetime.now(UTC)
            )
        except BundleError as e:
            self.trust.refuse("assignment", str(e))
            return None
        self.trust.assignment = a.model_dump(mode="json")
        self.trust.save()
        return a

    def act(self, a: assignment.Assignment) -> bool:
        """Run the assigned bundle; whether the installed bundle changed."""
        active = self.models.active
        current = str(active.bundle.bundle_id) if active else None
        if a.bundle is None or a.bundle == current or self.tried == (a.version, a.bundle):
            return False
        self.tried = (a.version, a.bundle)
        state = self.models.bundles.state()
        if a.rollback and a.bundle == state.previous:
            return self.models.revert(f"assignment v{a.version}: rollout {a.rollout} sends it back")
        if a.bundle in state.bad:
            log.info("assignment v%d: %s failed here before; kept %s", a.version, a.bundle, current)
            return False
        try:
            path = self.fetch(a)
        except (PullError, BundleError, OSError) as e:
            self.tried = None  # fetched again at the next pull
            self._failed(str(e))
            return False
        try:
            result = self.models.install(path)
        finally:
            path.unlink(missing_ok=True)
        return bool(result.get("accepted")) and self.models.active is not active

    def fetch(self, a: assignment.Assignment) -> Path:
        """The assigned bundle, downloaded and its sha256 checked."""
        if a.url is None or a.sha256 is None:
            raise BundleError(f"assignment v{a.version} names {a.bundle} but not where it is")
        data = self._get(f"{self.cfg.endpoint}{a.url}")
        digest = hashlib.sha256(data).hexdigest()
        if digest != a.sha256:
            raise BundleError(f"{a.bundle} from {a.url}: sha256 {digest[:12]}... is not assigned")
        self.downloads.mkdir(parents=True, exist_ok=True)
        path = self.downloads / f"{a.bundle}.pfbundle"
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        return path
