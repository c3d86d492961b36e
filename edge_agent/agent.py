"""The agent: reads readings, scores every pump's windows with the current bundle (and
its health with the bundle's anomaly model, where it has one), buffers predictions,
alerts and anomalies in the store, uploads them when it can, and takes new bundles —
verified, self-tested, switched atomically, rolled back by itself.

One thread does everything, in :meth:`Agent.step`; the clock is injected.
"""

from __future__ import annotations

import json
import logging
import math
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from edge_agent import __version__ as AGENT_VERSION
from edge_agent import source, updates, windows
from edge_agent.config import AgentConfig
from edge_agent.health import health_or_none
from edge_agent.model import FP32, Installed, Scorer, open_bundle
from edge_agent.store import Store
from edge_agent.uploader import Uploader, UploadError, backoff
from pumpfleet.bundle import BundleId
from pumpfleet.errors import BundleError, InputError, one_line
from pumpfleet.features import window_summary
from pumpfleet.readings import window_problems
from pumpfleet.records import PredictionRecord
from pumpfleet.scoring import RulScores

log = logging.getLogger(__name__)

# What a bundle that verified can still fail with: a manifest or spec that does not
# parse (pydantic's and json's errors are ValueErrors), a member it names but lacks.
BAD_BUNDLE = (BundleError, ValueError, KeyError)
PROFILE_FILE = "profile.json"
MAX_BATCHES_PER_STEP = 20
DONE_KEEP = 1000
SHOW_SET_ASIDE = 20  # lines set aside that are logged one by one, per file or batch


class Agent:
    def __init__(
        self,
        cfg: AgentConfig,
        clock: Callable[[], float] = time.monotonic,
        uploader: Uploader | None = None,
    ) -> None:
        self.cfg = cfg
        self.clock = clock
        self.public_key = cfg.key()
        for d in (cfg.state_dir, cfg.spool, cfg.updates):
            d.mkdir(parents=True, exist_ok=True)
        self.store = Store(cfg.state_dir / "store.db")
        self.bundles = updates.BundleDir(cfg.state_dir / "bundles")
        self.policy = updates.Policy(
            cfg.probation_windows, cfg.rollback_error_rate, cfg.rollback_min_windows
        )
        self.uploader = uploader or (
            Uploader(cfg.endpoint, cfg.upload_key(), cfg.device_id, cfg.upload_timeout_seconds)
            if cfg.endpoint
            else None
        )
        self.active: Scorer | None = None
        self.fallback: Scorer | None = None  # the previous model, while the new is on probation
        self.probation: updates.Probation | None = None
        self.failures = 0
        self.next_upload = 0.0
        self.next_heartbeat = 0.0
        self.last_update: dict[str, Any] = {}
        self.last_error: str | None = None
        self._start()

    # --- bundles ------------------------------------------------------------------------

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

    def _load(self, bundle: str) -> Scorer:
        """The installed bundle, verified again (a file changed on disk is caught) and
        self-tested."""
        scorer = self.scorer(open_bundle(self.bundles.path(bundle), self.public_key))
        ok, why = scorer.self_test()
        if not ok:
            raise BundleError(f"{bundle} self-test: {why}")
        return scorer

    def _start(self) -> None:
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

    def install(self, path: Path) -> dict[str, Any]:
        """Try a bundle: verify, decide, stage, self-test, switch. The current model keeps
        scoring unless all of that passes. Returns what happened."""
        current = self.active.bundle.manifest if self.active else None
        state = self.bundles.state()
        try:
            candidate = open_bundle(path, self.public_key)
            if current is not None and candidate.manifest == current:
                # Installed already (the agent stopped before it moved the file away).
                return {"bundle": path.name, "accepted": True, "version": candidate.version}
            why = updates.refuse_reason(candidate.manifest, current, state.bad)
            if why:
                raise BundleError(why)
            bundle_id = str(candidate.bundle_id)
            staged = self.bundles.stage(path, bundle_id)
            try:
                scorer = self.scorer(open_bundle(staged, self.public_key))
                ok, test = scorer.self_test()
                if not ok and scorer.variant != FP32:  # a reduced variant may not fit here
                    scorer = self.scorer(scorer.bundle, FP32)
                    ok, test = scorer.self_test()
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

    def check_updates(self) -> list[dict[str, Any]]:
        """Install every bundle waiting in the updates folder, oldest name first; each is
        moved to applied/ or rejected/."""
        done = []
        for path in sorted(self.cfg.updates.glob("*.pfbundle")):
            result = self.install(path)
            source.move(path, "applied" if result["accepted"] else "rejected", None)
            done.append(result)
        return done

    def _roll_back(self, why: str) -> None:
        log.error("rolling back: %s", why)
        failed = self.bundles.state().current
        self.bundles.roll_back()
        self.active, self.fallback, self.probation = self.fallback, None, None
        self.store.count({"rollbacks": 1})
        self.last_update = {"rolled_back": failed, "why": why}

    # --- scoring ------------------------------------------------------------------------

    def accept(self, parsed: source.Parsed, file_key: str | None = None) -> dict[str, int]:
        """Score what a spool file or stdin held; what was set aside is counted with the
        rest, in the same transaction."""
        for s in parsed.set_aside[:SHOW_SET_ASIDE]:
            log.warning("line %d set aside: %s", s.line, s.reason)
        if len(parsed.set_aside) > SHOW_SET_ASIDE:
            log.warning("... and %d more lines set aside", len(parsed.set_aside) - SHOW_SET_ASIDE)
        if parsed.unknown_columns:
            log.warning("columns the model does not read: %s", sorted(parsed.unknown_columns))
        return self.score(
            parsed.readings,
            file_key,
            {
                "rows_set_aside": len(parsed.set_aside),
                "unknown_columns": len(parsed.unknown_columns),
                "missing_columns": len(parsed.missing_columns),
            },
        )

    def score(
        self,
        readings: list[source.Reading],
        file_key: str | None = None,
        counted: dict[str, int] | None = None,
    ) -> dict[str, int]:
        """Score readings into the store in one transaction with the pumps' state (and
        the source file's done mark, and the ``counted`` counters)."""
        assert self.active is not None
        cut = windows.roll(
            self.store.pump_states(sorted({r.pump_id for r in readings})),
            readings,
            self.active.spec,
        )
        keep = self._scorable(cut)
        records, failed = self._records(
            [cut.windows[i] for i in keep],
            [cut.ends[i] for i in keep],
            [cut.pumps[i] for i in keep],
        )
        thinned = self.store.commit(
            records,
            cut.states,
            self.cfg.quota_bytes,
            file_key,
            {
                "stale_readings": cut.stale,
                "reading_gaps": cut.gaps,
                "window_resets": cut.resets,
                "scoring_errors": failed["rul"],
                "records_refused": failed["refused"],
                "windows_set_aside": len(cut.windows) - len(keep),
                "anomaly_errors": failed["anomaly"],
                **(counted or {}),
            },
        )
        self._judge(len(cut.windows), failed["windows"])
        return {"windows": len(cut.windows), "errors": failed["rul"], "thinned": thinned}

    def _scorable(self, cut: windows.Cut) -> list[int]:
        """The windows the doors' rules let be scored (pumpfleet.readings): enough of
        their channel readings present; the others are counted, not scored."""
        assert self.active is not None
        if not cut.windows:
            return []
        raw = _raw(cut.windows)
        problems = window_problems(raw, self.active.spec)
        for i, why in enumerate(problems):
            if why is not None:
                log.warning("window of %s ending %d not scored: %s", cut.pumps[i], cut.ends[i], why)
        return [i for i, why in enumerate(problems) if why is None]

    def _records(
        self, cut_windows: list[list[windows.Row]], ends: list[int], pumps: list[str]
    ) -> tuple[list[dict[str, Any]], dict[str, int]]:
        """The windows' records, and how many windows the active model failed on: its RUL
        outputs (not recorded unless the fallback scored them), its health (recorded
        without one), and either (what its probation counts)."""
        assert self.active is not None
        if not cut_windows:
            return [], {"rul": 0, "anomaly": 0, "windows": 0, "refused": 0}
        raw = _raw(cut_windows)
        scorer = self.active
        threshold = self.cfg.alert_threshold or scorer.bundle.alert_threshold
        scored, ms = _predict(scorer, raw, threshold)
        rul, prob, alert, ok = scored.rul_hours, scored.failure_probability, scored.alert, scored.ok
        health = health_or_none(scorer.health, raw, scorer.version)
        used = [scorer] * len(raw)
        failed = ~ok | ~health.ok if scorer.health is not None else ~ok
        counts = {
            "rul": int((~ok).sum()),
            "anomaly": int((~health.ok).sum()) if scorer.health is not None else 0,
            "windows": int(failed.sum()),
            "refused": 0,
        }
        fallback = self.fallback
        if counts["windows"] and fallback is not None and _same_inputs(fallback, scorer):
            # Windows the new model could not score are scored by the one it replaced.
            bad = np.flatnonzero(failed)
            again, _ = _predict(fallback, raw[bad], threshold)
            h2 = health_or_none(fallback.health, raw[bad], fallback.version)
            rul[bad], prob[bad], ok[bad] = again.rul_hours, again.failure_probability, again.ok
            alert[bad] = again.alert
            health.scores[bad], health.flags[bad], health.ok[bad] = h2.scores, h2.flags, h2.ok
            for i in bad:
                used[i] = fallback
        if counts["windows"]:
            log.warning(
                "v%d could not score %d of %d windows (RUL %d, health %d)",
                scorer.version,
                counts["windows"],
                len(raw),
                counts["rul"],
                counts["anomaly"],
            )
        summary = window_summary(raw, scorer.spec)
        records: list[dict[str, Any]] = []
        flagged: list[str] = []
        for i in np.flatnonzero(ok):
            key = f"{self.cfg.device_id}:{pumps[i]}:{ends[i]}"
            model = used[i].health
            has_health = model is not None and bool(health.ok[i])
            anomaly = bool(health.flags[i]) if has_health else None
            fields = {
                "request_id": key,
                "timestamp": int(ends[i]),
                "pump_id": pumps[i],
                "pump_class": used[i].bundle.pump_class,
                "arm": "edge",
                "model_version": str(used[i].version),
                "variant": used[i].variant,
                "rul_hours": float(rul[i]),
                "failure_probability": float(prob[i]),
                "alert": bool(alert[i]),
                "latency_ms": ms,
                "shadow_version": None,
                "shadow_rul_hours": None,
                "shadow_failure_probability": None,
                "health_score": float(health.scores[i]) if has_health else None,
                "anomaly": anomaly,
                "anomaly_version": model.version if has_health and model is not None else None,
                **{f"in_{c}": _finite(v[i]) for c, v in summary.items()},
            }
            try:  # the record contract the cloud's upload route holds it to
                row = PredictionRecord.model_validate(fields).model_dump()
            except ValidationError as e:
                counts["refused"] += 1
                log.warning("window of %s not recorded: %s", pumps[i], one_line(e))
                continue
            records.append(
                {"key": key, "alert": bool(alert[i]), "anomaly": bool(anomaly), "row": row}
            )
            if anomaly:
                flagged.append(pumps[i])
        if flagged:
            # The device's local alarm: these rows are kept through any quota, like alerts.
            log.warning(
                "anomaly: %d windows over the health threshold (pumps %s)",
                len(flagged),
                ", ".join(sorted(set(flagged))[:10]),
            )
        return records, counts

    def _judge(self, windows: int, errors: int) -> None:
        if self.probation is None or windows == 0:
            return
        on_trial = self.probation.bundle
        self.probation, why = updates.judge(self.probation, windows, errors, self.policy)
        if why:
            self._roll_back(why)
        elif self.probation is None:
            log.info("%s passed probation", on_trial)
            self.fallback = None
            self.bundles.end_probation()

    def process_spool(self, max_files: int = 50) -> int:
        """Score complete spool files (up to ``max_files``); returns how many."""
        if self.active is None:
            return 0
        n = 0
        for path in source.pending(self.cfg.spool)[:max_files]:
            try:
                key, parsed = source.read_file(
                    path, self.active.spec, self.cfg.spool_max_file_bytes
                )
            except (InputError, OSError) as e:
                self.store.count({"bad_files": 1})
                source.move(path, source.BAD, str(e))
                log.warning("%s moved to bad/: %s", path.name, e)
                continue
            if not self.store.file_done(key):
                if parsed.set_aside:
                    source.write_set_aside(path, parsed.set_aside)
                self.accept(parsed, key)
            source.move(path, source.DONE)
            n += 1
        if n:
            source.prune(self.cfg.spool / source.DONE, DONE_KEEP)
        return n

    # --- upload -------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        state = self.bundles.state()
        anomaly_model = self.active.health if self.active else None
        return {
            "agent_version": AGENT_VERSION,
            "device_id": self.cfg.device_id,
            "pump_class": self.active.bundle.pump_class if self.active else None,
            "model_version": self.active.version if self.active else None,
            "variant": self.active.variant if self.active else None,
            "provider": self.active.provider if self.active else None,
            "anomaly_version": anomaly_model.version if anomaly_model else None,
            "anomaly_variant": anomaly_model.variant if anomaly_model else None,
            "bundle": str(self.active.bundle.bundle_id) if self.active else None,
            "previous_bundle": state.previous,
            "bad_bundles": state.bad,
            "on_probation": self.probation is not None,
            "status": "ok" if self.active else "no model",
            "counters": self.store.counters(),
            "buffered": self.store.buffered(),
            "last_update": self.last_update,
            "last_upload_error": self.last_error,
            "time": time.time(),
        }

    def upload(self) -> int:
        """Send pending batches while the cloud acknowledges them; on failure, back off.
        Returns the rows acknowledged."""
        if self.uploader is None or self.clock() < self.next_upload:
            return 0
        sent = 0
        for _ in range(MAX_BATCHES_PER_STEP):
            batch = self.store.pending_batch(self.cfg.upload_batch)
            heartbeat = batch is None and self.clock() >= self.next_heartbeat
            if batch is None and not heartbeat:
                break
            key, records = batch if batch else (f"heartbeat-{int(time.time() * 1000)}", [])
            try:
                ack = self.uploader.post(key, records, self.health())
            except UploadError as e:
                self.failures += 1
                delay = backoff(
                    self.failures,
                    self.cfg.backoff_seconds,
                    self.cfg.backoff_max_seconds,
                    random.random(),
                )
                self.next_upload = self.clock() + delay
                if self.last_error != str(e):
                    log.warning("%s; retrying in %.1f s", e, delay)
                self.last_error = str(e)
                break
            self.failures = 0
            self.last_error = None
            self.next_heartbeat = self.clock() + self.cfg.heartbeat_seconds
            if batch is None:
                break
            sent += self.store.acknowledge(key, ack["duplicate"])
        return sent

    # --- the loop -----------------------------------------------------------------------

    def step(self) -> bool:
        """One round: updates, spool, upload. Whether anything was done."""
        installed = self.check_updates()
        scored = self.process_spool()
        sent = self.upload()
        return bool(installed or scored or sent)

    def idle(self) -> bool:
        """Nothing left to do: no spool file (or no model to score it) and nothing
        buffered (or nowhere to send it)."""
        spool_empty = self.active is None or not source.pending(self.cfg.spool)
        sent_all = self.uploader is None or self.store.buffered()["rows"] == 0
        return spool_empty and sent_all and not any(self.cfg.updates.glob("*.pfbundle"))

    def run(self, stop: threading.Event, exit_when_idle: bool = False) -> None:
        """Step until ``stop``; a step that fails (a full disk, a bug) is logged with its
        traceback and counted, and the loop goes on after a pause."""
        while not stop.is_set():
            try:
                busy = self.step()
            except Exception:  # any one failure must not stop the device: say it, go on
                log.exception("agent step failed; retrying in %.1f s", self.cfg.poll_seconds)
                self._count_quietly({"step_errors": 1})
                busy = False
            if exit_when_idle and self.idle():
                return
            if not busy:
                stop.wait(self.cfg.poll_seconds)

    def _count_quietly(self, counters: dict[str, int]) -> None:
        try:
            self.store.count(counters)
        except Exception as e:  # the store may be what failed
            log.error("could not count %s: %s", counters, e)


def _raw(cut_windows: list[list[windows.Row]]) -> np.ndarray:
    """Windows of rows as ``[N, W, C + S]`` float64, a missing reading as NaN."""
    return np.array(
        [[[np.nan if v is None else v for v in row] for row in w] for w in cut_windows],
        dtype=np.float64,
    )


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _same_inputs(a: Scorer, b: Scorer) -> bool:
    return a.spec.inputs == b.spec.inputs and a.spec.window == b.spec.window


def _predict(scorer: Scorer, raw: np.ndarray, threshold: float) -> tuple[RulScores, float]:
    """``Scorer.predict``, where a model that raises has failed every window: that is
    the error rate its probation counts, and the agent goes on."""
    try:
        return scorer.predict(raw, threshold)
    except Exception as e:  # onnxruntime's errors have no common base but Exception
        log.warning("v%d failed on %d windows: %s", scorer.version, len(raw), e)
        n, none = len(raw), np.zeros(len(raw), dtype=bool)
        return RulScores(np.zeros(n), np.zeros(n), none, none, raw, np.zeros((n, 2))), 0.0
