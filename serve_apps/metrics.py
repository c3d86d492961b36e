"""The service's Prometheus metrics (exported by Ray's metrics agent with a ``ray_``
prefix, and a counter with a ``_total`` suffix): scored windows by class, arm and
outcome, latency, the version serving and the monitor's drift alerts. The Grafana
dashboard and the alert rules under cluster/ query these names
(tests/unit/test_dashboard.py holds them to this file)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from ray.util import metrics

from pumpfleet import storage
from pumpfleet.errors import PumpfleetError
from pumpfleet.settings import get_settings

if TYPE_CHECKING:
    from serve_apps.model_set import ServedClass

_REQUESTS = metrics.Counter(
    "pumpfleet_scoring_requests",
    description="scored windows by class, arm and outcome",
    tag_keys=("pump_class", "arm", "outcome"),
)
_LATENCY = metrics.Histogram(
    "pumpfleet_scoring_latency_ms",
    description="time to score one request, by class and arm",
    boundaries=[0.5, 1, 2, 5, 10, 20, 50, 100, 250, 1000],
    tag_keys=("pump_class", "arm"),
)
_LOOP_ERRORS = metrics.Counter(
    "pumpfleet_loop_errors",
    description="errors in a replica's background work (flush, refresh, shadow), by loop",
    tag_keys=("loop",),
)
_VERSION = metrics.Gauge(
    "pumpfleet_model_version",
    description="the model version serving each class and arm",
    tag_keys=("pump_class", "arm"),
)
_DRIFT = metrics.Gauge(
    "pumpfleet_drift_alert",
    description="1 while the monitor's latest report has a drift alert open for the class",
    tag_keys=("pump_class",),
)
DRIFT_REPORT = "drift-latest.json"  # what the monitor writes last under its reports
log = logging.getLogger(__name__)


# Scored windows by (class, arm), counted into _REQUESTS at the next flush(): a Ray metric
# record is a good part of what a single window costs a replica, and the latency
# histogram (one record a request) counts the requests already. The replica flushes
# with its prediction log (every flush_seconds) and when it stops.
_SCORED: dict[tuple[str, str], int] = {}
_SCORED_LOCK = threading.Lock()
_TAGS: dict[tuple[str, str], dict[str, str]] = {}


def scored(pump_class: str, arm: str, windows: int, latency_ms: float) -> None:
    """``windows`` scored together by one arm's model in ``latency_ms`` (the windows
    counted at the next :func:`flush`)."""
    key = (pump_class, arm)
    tags = _TAGS.get(key)
    if tags is None:
        tags = _TAGS.setdefault(key, {"pump_class": pump_class, "arm": arm})
    with _SCORED_LOCK:
        _SCORED[key] = _SCORED.get(key, 0) + windows
    _LATENCY.observe(latency_ms, tags=tags)


def flush() -> None:
    """Count the windows scored since the last flush into ``pumpfleet_scoring_requests``."""
    with _SCORED_LOCK:
        counts = dict(_SCORED)
        _SCORED.clear()
    for (pump_class, arm), n in counts.items():
        if n > 0:  # Ray's counters refuse an increment of 0
            _REQUESTS.inc(n, tags={"pump_class": pump_class, "arm": arm, "outcome": "ok"})


def rejected() -> None:
    """A single window refused (unknown class, a window that does not fit)."""
    _REQUESTS.inc(tags={"pump_class": "?", "arm": "?", "outcome": "rejected"})


def loop_failed(loop: str) -> None:
    """One step of a background loop failed (it was logged, and the loop went on)."""
    _LOOP_ERRORS.inc(tags={"loop": loop})


def serving(classes: Mapping[str, ServedClass], reports_uri: str | None = None) -> None:
    """The version each class and arm serves now, and each class's drift alert from the
    monitor's latest report under ``reports_uri`` (default: the settings' reports)."""
    for cls, c in classes.items():
        for arm, model in c.arms.items():
            _VERSION.set(float(model.version), tags={"pump_class": cls, "arm": str(arm)})
    status = drift_status(reports_uri or get_settings().reports_uri, classes)
    for cls, alert in (status or {}).items():
        _DRIFT.set(float(alert), tags={"pump_class": cls})


def drift_status(reports_uri: str, served: Iterable[str]) -> dict[str, int] | None:
    """Per class, 1 when the monitor's latest report under ``reports_uri`` has a drift
    alert open for it (``alerting_classes``, after the monitor's hysteresis), 0 for the
    other classes served or analysed (all 0 before the first report); None when the
    report cannot be read (the last known status stays)."""
    where = storage.join(reports_uri, DRIFT_REPORT)
    try:
        report = storage.read_json(where) if storage.exists(where) else {}
    except (OSError, ValueError, PumpfleetError) as e:
        log.warning("the monitor's report %s cannot be read: %s", where, e)
        return None
    if not isinstance(report, Mapping):
        log.warning("the monitor's report %s is not a JSON object", where)
        return None
    open_ = {str(c) for c in report.get("alerting_classes") or []}
    known = set(served) | {str(c) for c in report.get("classes") or {}} | open_
    return {c: int(c in open_) for c in sorted(known)}


# The crews' view (serve_apps/fleet_routes.py): refreshed by each replica's webhook
# sender from the fleet database; every replica reads the same database, so a query by
# max() over replicas is the fleet's figure.
_OPEN_ALERTS = metrics.Gauge(
    "pumpfleet_open_alerts",
    description="alerts not closed, by pump class and site",
    tag_keys=("pump_class", "site"),
)
_STALE_PUMPS = metrics.Gauge(
    "pumpfleet_stale_pumps", description="pumps with no reading for longer than stale_seconds"
)
_DEVICES_ONLINE = metrics.Gauge(
    "pumpfleet_devices_online",
    description="edge devices that uploaded within device_stale_seconds",
)
_FLEET_DROPPED = metrics.Counter(
    "pumpfleet_fleet_rows_dropped",
    description="scored rows the fleet feed dropped because its queue was full",
)
_OPEN_SEEN: set[tuple[str, str]] = set()


def fleet_gauges(open_by: Mapping[tuple[str, str], int], stale: int, online: int) -> None:
    """Open alerts by (class, site), stale pumps and devices online, from the fleet
    database; a (class, site) whose alerts all closed goes back to 0."""
    for key in _OPEN_SEEN - set(open_by):
        _OPEN_ALERTS.set(0.0, tags={"pump_class": key[0], "site": key[1] or "none"})
    for (cls, site), n in open_by.items():
        _OPEN_ALERTS.set(float(n), tags={"pump_class": cls, "site": site or "none"})
    _OPEN_SEEN.update(open_by)
    _STALE_PUMPS.set(float(stale))
    _DEVICES_ONLINE.set(float(online))


def fleet_dropped(rows: int) -> None:
    """``rows`` scored rows not fed to the fleet state (its queue was full, or its
    database not open)."""
    if rows > 0:  # Ray's counters refuse an increment of 0
        _FLEET_DROPPED.inc(rows)
