"""The replica's webhook sender: a thread that sends the fleet outbox's due events
(:func:`pumpfleet.webhooks.deliver_due`) every ``webhook_poll_seconds``, and, less
often, settles expired alerts and refreshes the fleet gauges. It never touches a
request: an event waits in the database until a sender (this replica's, or another's
after a restart) has delivered it."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from pumpfleet import webhooks
from pumpfleet.fleet_store import FleetDB
from serve_apps.schemas import FleetConfig

log = logging.getLogger(__name__)

GAUGE_SECONDS = 15.0


class WebhookSender:
    """Sends ``db``'s outbox by ``config`` until ``stop`` is set; ``chores`` run every
    ``GAUGE_SECONDS`` (settling alerts, the gauges)."""

    def __init__(
        self,
        db: FleetDB,
        config: FleetConfig,
        stop: threading.Event,
        guarded: Callable[[str, Callable[[], object]], bool],
        chores: Callable[[], None] = lambda: None,
        post: webhooks.Post = webhooks.http_post,
    ) -> None:
        self.db = db
        self.config = config
        self.backoff = webhooks.Backoff(
            base=config.webhook_backoff_seconds,
            cap=config.webhook_backoff_cap_seconds,
            lease=config.webhook_timeout_seconds + 30.0,
        )
        self._stop = stop
        self._guarded = guarded
        self._chores = chores
        self._post = post
        self._thread = threading.Thread(target=self._run, name="webhook-sender", daemon=True)
        self._thread.start()

    def send_due(self) -> tuple[int, int]:
        """One pass over the due events."""
        if not self.config.webhook_secret:
            return 0, 0
        return webhooks.deliver_due(
            self.db.engine,
            self.config.webhook_secret,
            time.time(),
            self._post,
            self.backoff,
            self.config.webhook_timeout_seconds,
        )

    def _run(self) -> None:
        last_chores = 0.0
        while not self._stop.wait(self.config.webhook_poll_seconds):
            if self.config.webhook_urls:
                self._guarded("webhooks", self.send_due)
            if time.monotonic() - last_chores >= GAUGE_SECONDS:
                last_chores = time.monotonic()
                self._guarded("fleet chores", self._chores)
