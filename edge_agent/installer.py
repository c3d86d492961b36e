"""The device's models: which bundle scores now, the one it replaced while the new one is
on probation, and taking a new bundle — verified, self-tested, switched atomically, rolled
back by itself.

The decisions are :mod:`edge_agent.updates`' pure functions; this class holds their state
and does what they say, on disk (:class:`edge_agent.updates.BundleDir`) and in memory.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from edge_agent import updates
from edge_agent.config import AgentConfig
from edge_agent.model import FP32, Installed, Scorer, open_bundle
from edge_agent.store import Store
from edge_agent.trust import TrustStore
from pumpfleet.bundle import BundleId
from pumpfleet.errors import BundleError

log = logging.getLogger(__name__)

# What a bundle that verified can still fail with: a manifest or spec that does not
# parse (pydantic's and json's errors are ValueErrors), a member it names but lacks.
BAD_BUNDLE = (BundleError, ValueError, KeyError)
PROFILE_FILE = "profile.json"


class Installer:
    """The active model (and its fallback on probation) of one device."""

    def __init__(self, cfg: AgentConfig, store: Store, trust: TrustStore) -> None:
        self.cfg = cfg
        self.store = store
        self.trust = trust
        self.bundles = updates.BundleDir(cfg.state_dir / "bundles")
        self.policy = updates.Policy(
            cfg.probation_windows, cfg.rollback_error_rate, cfg.rollback_min_windows
        )
        self.active: Scorer | None = None
        self.fallback: Scorer | None = None  # the previous model, while the new is on probation
        self.probation: updates.Probation | None = None
        self.last_update: dict[str, Any] = {}
        # The last self-test this device ran on a bundle it was offered (what a rollout
        # reads from the device's uploads).
        self.self_test: dict[str, Any] | None = None

    def _variant(self, bundle: Installed) -> str:
        """The configured variant, else the profiler's choice for this bundle, else fp32."""
        if self.cfg.variant:
            return self.cfg.variant
        path = self.cfg.state_dir / PROFILE_FILE
        if path.exists():
            chosen = json.loads(path.read_text())
            if "bundle" in chosen:
                # Timed with its health model: another health model is profiled anew.
                same = chosen["bundle"] == str(bundle.bundle_id)
            else:  # written by an agent that profiled by RUL version only
                same = chosen.get("bundle_version") == bundle.version
            if same and chosen.get("variant"):
                return str(chosen["variant"])
        return FP32

    def scorer(self, bundle: Installed, variant: str | None = None) -> Scorer:
        return Scorer(
            bundle,
            variant or self._variant(bundle),
            threads=self.cfg.threads,
            provider_kind=self.cfg.providers,
            engine_dir=self.cfg.state_dir / "engines",
        )

    def open(self, path: Path) -> Installed:
        """A bundle signed as the trusted root's targets role says (its keys, its
        threshold) and otherwise verified."""
        keys, threshold = self.trust.bundle_keys()
        return open_bundle(path, keys, threshold)

    def _load(self, bundle: str) -> Scorer:
        """The installed bundle, verified again against every key it may have been taken
        under (a file changed on disk is caught; a key rotated out since is not a
        reason to stop scoring) and self-tested."""
        scorer = self.scorer(open_bundle(self.bundles.path(bundle), self.trust.targets_ever))
        ok, why = scorer.self_test()
        if not ok:
            raise BundleError(f"{bundle} self-test: {why}")
        return scorer

    def start(self) -> None:
        """Load what is installed (the initial bundle at first start); roll back a current
        bundle that no longer verifies or passes its self-test."""
        state = self.bundles.state()
        if state.current is None and self.cfg.initial_bundle is not None:
            self.install(self.cfg.initial_bundle)
            state = self.bundles.state()
        while state.current is not None and self.active is None:
            try:
                self.active = self._load(state.current)
            except BAD_BUNDLE as e:
                log.error("current bundle unusable, rolling back: %s", e)
                self.store.count({"rollbacks": 1})
                self.last_update = {"rolled_back": state.current, "why": str(e)}
                state = self.bundles.roll_back()
        if state.probation is not None and self.active is not None:
            self.probation = updates.Probation(state.probation)
            if state.previous is not None:
                try:
                    self.fallback = self._load(state.previous)
                except BAD_BUNDLE as e:
                    log.warning("previous bundle unusable: %s", e)
        if self.active is None:
            log.warning("no model installed: readings wait in the spool for a bundle")

    def refuse(self, candidate: Installed) -> str | None:
        """Why a verified bundle may not replace the current one (None: it may)."""
        current = self.active.bundle.manifest if self.active else None
        why = updates.refuse_reason(candidate.manifest, current, self.bundles.state().bad)
        return why or self.trust.bundle_problem(candidate.manifest)

    def install(self, path: Path) -> dict[str, Any]:
        """Try a bundle: verify, decide, stage, self-test, switch. The current model keeps
        scoring unless all of that passes. Returns what happened."""
        current = self.active.bundle.manifest if self.active else None
        try:
            candidate = self.open(path)
            if current is not None and candidate.manifest == current:
                # Installed already (the agent stopped before it moved the file away).
                return {"bundle": path.name, "accepted": True, "version": candidate.version}
            why = self.refuse(candidate)
            if why:
                self.trust.refuse(f"bundle {path.name}", why)
                raise BundleError(why)
            bundle_id = str(candidate.bundle_id)
            staged = self.bundles.stage(path, bundle_id)
            try:
                scorer = self.scorer(self.open(staged))
                ok, test = scorer.self_test()
                if not ok and scorer.variant != FP32:  # a reduced variant may not fit here
                    scorer = self.scorer(scorer.bundle, FP32)
                    ok, test = scorer.self_test()
                self.self_test = {"bundle": bundle_id, "ok": ok, "detail": test}
                if not ok:
                    raise BundleError(f"self-test failed: {test}")
            except BAD_BUNDLE:
                self.bundles.mark_bad(bundle_id)
                raise
        except BAD_BUNDLE as e:
            self.store.count({"bundles_rejected": 1})
            self.last_update = {"bundle": path.name, "accepted": False, "why": str(e)}
            log.warning("bundle %s rejected: %s", path.name, e)
            return self.last_update
        self.bundles.switch(bundle_id)
        self.trust.took_bundle(candidate.manifest)
        # A rollback made in the registry: the bundle rolled back is not taken again.
        back = updates.rolls_back(candidate.manifest, BundleId.of(current)) if current else None
        if back is not None:
            self.bundles.mark_bad(back)
            log.warning("%s rolled back in the registry: %s replaces it", back, bundle_id)
        self.fallback, self.active = self.active, scorer
        self.probation = updates.Probation(bundle_id) if self.fallback else None
        self.bundles.prune()
        self.store.count({"bundles_installed": 1})
        self.last_update = {
            "bundle": path.name,
            "accepted": True,
            "bundle_id": bundle_id,
            "version": candidate.version,
            "anomaly_version": scorer.health.version if scorer.health else None,
            "variant": scorer.variant,
            "self_test": test,
            **({"rolled_back": back} if back is not None else {}),
        }
        log.info("switched to %s (%s): %s", bundle_id, scorer.variant, test)
        return self.last_update

    def roll_back(self, why: str) -> None:
        log.error("rolling back: %s", why)
        failed = self.bundles.state().current
        self.bundles.roll_back()
        self.active, self.fallback, self.probation = self.fallback, None, None
        self.store.count({"rollbacks": 1})
        self.last_update = {"rolled_back": failed, "why": why}

    def revert(self, why: str) -> bool:
        """Go back to the previous bundle (kept installed) by order of the fleet (a
        halted rollout), loading it first where its probation is over; whether it did."""
        previous = self.bundles.state().previous
        if previous is None:
            return False
        if self.fallback is None:
            try:
                self.fallback = self._load(previous)
            except BAD_BUNDLE as e:
                log.error("cannot go back to %s: %s", previous, e)
                return False
        self.roll_back(why)
        return True

    def judge(self, windows: int, errors: int) -> None:
        """Count a scored batch against the probation of a new model; roll it back or end
        its probation as :func:`edge_agent.updates.judge` says."""
        if self.probation is None or windows == 0:
            return
        on_trial = self.probation.bundle
        self.probation, why = updates.judge(self.probation, windows, errors, self.policy)
        if why:
            self.roll_back(why)
        elif self.probation is None:
            log.info("%s passed probation", on_trial)
            self.fallback = None
            self.bundles.end_probation()
