"""The service's Prometheus metrics (exported by Ray's metrics agent with a ``ray_``
prefix): scored windows by class, arm and outcome, latency, and the version serving."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from ray.util import metrics

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


def scored(pump_class: str, arm: str, windows: int, latency_ms: float) -> None:
    """``windows`` scored together by one arm's model in ``latency_ms``."""
    tags = {"pump_class": pump_class, "arm": arm}
    _REQUESTS.inc(windows, tags={**tags, "outcome": "ok"})
    _LATENCY.observe(latency_ms, tags=tags)


def rejected() -> None:
    """A single window refused (unknown class, a window that does not fit)."""
    _REQUESTS.inc(tags={"pump_class": "?", "arm": "?", "outcome": "rejected"})


def loop_failed(loop: str) -> None:
    """One step of a background loop failed (it was logged, and the loop went on)."""
    _LOOP_ERRORS.inc(tags={"loop": loop})


def serving(classes: Mapping[str, ServedClass]) -> None:
    """The version each class and arm serves now."""
    for cls, c in classes.items():
        for arm, model in c.arms.items():
            _VERSION.set(float(model.version), tags={"pump_class": cls, "arm": str(arm)})
