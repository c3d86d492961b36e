"""The agent: reads readings, scores every pump's windows with the current bundle (and
its health with the bundle's anomaly model, where it has one), buffers predictions,
alerts and anomalies in the store, uploads them when it can, and takes new bundles —
verified, self-tested, switched atomically, rolled back by itself
(:class:`edge_agent.installer.Installer`).

One thread does everything, in :meth:`Agent.step`; the clock is injected. Readings come
from the spool, stdin (:meth:`Agent.accept`) and any other :class:`Input` (MQTT); what
was stored is handed to each listener (the MQTT alarms) after its transaction.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_agent import __version__ as AGENT_VERSION
from edge_agent import source, updates, windows
from edge_agent.assignments import Puller
from edge_agent.config import AgentConfig
from edge_agent.explaining import Explainer
from edge_agent.inputs import Input, Listener
from edge_agent.installer import PROFILE_FILE, Installer
from edge_agent.model import Installed, Scorer
from edge_agent.predict import raw_windows, score_batch
from edge_agent.store import Store
from edge_agent.trust import TrustStore
from edge_agent.uploader import Uploader, UploadError, backoff
from pumpfleet.errors import InputError
from pumpfleet.readings import window_problems

log = logging.getLogger(__name__)

__all__ = ["PROFILE_FILE", "Agent", "Input"]

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
        for d in (cfg.state_dir, cfg.spool, cfg.updates):
            d.mkdir(parents=True, exist_ok=True)
        self.store = Store(cfg.state_dir / "store.db")
        self.trust = TrustStore(cfg.state_dir, cfg.trust_anchor())
        self.models = Installer(cfg, self.store, self.trust)
        self.uploader = uploader or (
            Uploader(cfg.endpoint, cfg.upload_key(), cfg.device_id, cfg.upload_timeout_seconds)
            if cfg.endpoint
            else None
        )
        self.explainer = (
            Explainer(cfg.explain_budget_ms, cfg.explain_every_seconds) if cfg.explain else None
        )
        self.inputs: list[Input] = []
        self.listeners: list[Listener] = []
        # Set by an input when something arrives: the loop wakes before its poll.
        self.wake = threading.Event()
        self.failures = 0
        self.next_upload = 0.0
        self.next_heartbeat = 0.0
        self.last_error: str | None = None
        self._files_busy = False
        self.models.start()
        self.puller = (
            Puller(cfg, self.trust, self.models, clock)
            if cfg.assignments and cfg.endpoint
            else None
        )
        if cfg.mqtt is not None:
            from edge_agent.mqtt import MqttBridge

            bridge = MqttBridge(cfg, self.wake)
            self.inputs.append(bridge)
            self.listeners.append(bridge.on_batch)

    # --- the models (edge_agent.installer) ----------------------------------------------

    @property
    def active(self) -> Scorer | None:
        return self.models.active

    @property
    def fallback(self) -> Scorer | None:
        return self.models.fallback

    @property
    def probation(self) -> updates.Probation | None:
        return self.models.probation

    @property
    def bundles(self) -> updates.BundleDir:
        return self.models.bundles

    @property
    def last_update(self) -> dict[str, Any]:
        return self.models.last_update

    def scorer(self, bundle: Installed, variant: str | None = None) -> Scorer:
        return self.models.scorer(bundle, variant)

    def install(self, path: Path) -> dict[str, Any]:
        """Try a bundle (:meth:`edge_agent.installer.Installer.install`)."""
        return self.models.install(path)

    # --- bundles ------------------------------------------------------------------------

    def check_updates(self) -> list[dict[str, Any]]:
        """Install every bundle waiting in the updates folder, oldest name first; each is
        moved to applied/ or rejected/."""
        done = []
        self.trust.take_root_files(self.cfg.updates)
        for path in sorted(self.cfg.updates.glob("*.pfbundle")):
            result = self.install(path)
            source.move(path, "applied" if result["accepted"] else "rejected", None)
            done.append(result)
        return done

    # --- scoring ------------------------------------------------------------------------

    def accept(
        self,
        parsed: source.Parsed,
        file_key: str | None = None,
        counted: dict[str, int] | None = None,
    ) -> dict[str, int]:
        """Score what a spool file, stdin or a batch of MQTT messages held; what was set
        aside is counted with the rest (and ``counted``), in the same transaction."""
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
                **(counted or {}),
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
        scorer = self.active
        batch = score_batch(
            self.cfg.device_id,
            scorer,
            self.fallback,
            self.cfg.alert_threshold or scorer.bundle.alert_threshold,
            raw_windows([cut.windows[i] for i in keep]),
            [cut.ends[i] for i in keep],
            [cut.pumps[i] for i in keep],
        )
        failed = batch.counts
        explained = self.explainer.explain(batch) if self.explainer else {}
        thinned = self.store.commit(
            batch.records,
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
                **explained,
                **(counted or {}),
            },
        )
        self.models.judge(len(cut.windows), failed["windows"])
        for listener in self.listeners:
            listener(batch)
        return {"windows": len(cut.windows), "errors": failed["rul"], "thinned": thinned}

    def _scorable(self, cut: windows.Cut) -> list[int]:
        """The windows the doors' rules let be scored (pumpfleet.readings): enough of
        their channel readings present; the others are counted, not scored."""
        assert self.active is not None
        if not cut.windows:
            return []
        raw = raw_windows(cut.windows)
        problems = window_problems(raw, self.active.spec)
        for i, why in enumerate(problems):
            if why is not None:
                log.warning("window of %s ending %d not scored: %s", cut.pumps[i], cut.ends[i], why)
        return [i for i, why in enumerate(problems) if why is None]

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
            "site": self.cfg.site,
            "pump_class": self.active.bundle.pump_class if self.active else self.cfg.pump_class,
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
            "self_test": self.models.self_test,
            "trust": self.trust.status(),
            "last_upload_error": self.last_error,
            "last_pull_error": self.puller.last_error if self.puller else None,
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
        """One round: updates, spool, the other inputs, upload. Whether anything was
        done."""
        pulled = self.puller.step() if self.puller is not None else False
        installed = self.check_updates()
        if pulled or installed:
            self.next_heartbeat = 0.0  # the cloud hears of a new bundle at once
        scored = self.process_spool()
        self._files_busy = bool(pulled or installed or scored)
        received = self._drain()
        sent = self.upload()
        return bool(pulled or installed or scored or received or sent)

    def _drain(self) -> int:
        return sum(i.drain(self) for i in self.inputs)

    def _quick_step(self) -> bool:
        """Between polls of the spool and updates folder: the inputs and the upload."""
        received = self._drain()
        return bool(received or self.upload())

    def idle(self) -> bool:
        """Nothing left to do: no spool file or message waiting (or no model to score
        them) and nothing buffered (or nowhere to send it)."""
        waiting = source.pending(self.cfg.spool) or any(i.due_in() is not None for i in self.inputs)
        sent_all = self.uploader is None or self.store.buffered()["rows"] == 0
        updates_left = any(self.cfg.updates.glob("*.pfbundle"))
        return (self.active is None or not waiting) and sent_all and not updates_left

    def _pause(self, stop: threading.Event) -> None:
        """Wait for the next poll, or less where an input wants draining sooner."""
        if not self.inputs:
            stop.wait(self.cfg.poll_seconds)
            return
        wait = self.cfg.poll_seconds
        if self.active is not None:
            for i in self.inputs:
                due = i.due_in()
                wait = wait if due is None else min(wait, due)
        if wait > 0 and not stop.is_set():
            self.wake.wait(wait)
        self.wake.clear()

    def close(self) -> None:
        """Close the inputs (MQTT says offline) and the store."""
        for i in self.inputs:
            i.close()
        self.store.close()

    def run(self, stop: threading.Event, exit_when_idle: bool = False) -> None:
        """Step until ``stop``; a step that fails (a full disk, a bug) is logged with its
        traceback and counted, and the loop goes on after a pause."""
        next_poll = 0.0
        while not stop.is_set():
            try:
                if self.inputs and self.clock() < next_poll:
                    # Messages come far more often than files: the folders are looked
                    # at every poll_seconds, not at every batch.
                    busy = self._quick_step()
                else:
                    busy = self.step()
                    if not self._files_busy:
                        next_poll = self.clock() + self.cfg.poll_seconds
            except Exception:  # any one failure must not stop the device: say it, go on
                log.exception("agent step failed; retrying in %.1f s", self.cfg.poll_seconds)
                self._count_quietly({"step_errors": 1})
                busy = False
            if exit_when_idle and self.idle():
                return
            if not busy:
                self._pause(stop)

    def _count_quietly(self, counters: dict[str, int]) -> None:
        try:
            self.store.count(counters)
        except Exception as e:  # the store may be what failed
            log.error("could not count %s: %s", counters, e)
