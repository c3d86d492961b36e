"""Profiling on the target: time every model variant of the current bundle on this
device, with the health (anomaly) model it runs beside, where the bundle has one, and
pick by speed and accuracy: of the variants whose accuracy cost (measured at export on
the holdout) is within the bundle's limit and which pass their self-test here, the most
accurate of those that are as fast as the fastest (:func:`choose`)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.health import HealthScorer
from edge_agent.model import Installed, Scorer
from pumpfleet.features import window_features


def time_windows(run: Callable[[np.ndarray], Any], x: np.ndarray, repeats: int) -> dict[str, float]:
    """Single-window latency (p50, p99, µs) of ``run`` over ``repeats`` passes of
    windows ``x``."""
    run(x[:1])  # warm up (and, with TensorRT, build the engine)
    lat = []
    for _ in range(repeats):
        for i in range(len(x)):
            t = time.perf_counter()
            run(x[i : i + 1])
            lat.append(time.perf_counter() - t)
    us = np.asarray(lat) * 1e6
    return {
        "p50_us": round(float(np.percentile(us, 50)), 2),
        "p99_us": round(float(np.percentile(us, 99)), 2),
    }


def time_variant(scorer: Scorer, x: np.ndarray, repeats: int) -> dict[str, float]:
    """Single-window latency of a RUL variant on feature windows ``x``."""
    return time_windows(scorer.run, x, repeats)


def time_health(health: HealthScorer, raw: np.ndarray, repeats: int) -> dict[str, Any]:
    """Single-window latency of the health model variant that runs beside a RUL variant,
    on its own features of raw windows ``raw`` (model only, like the RUL timing)."""
    x = window_features(raw, health.spec)
    return {"variant": health.variant, **time_windows(health.model.run, x, repeats)}


def _per_window_us(r: dict[str, Any]) -> float:
    """What a window costs with this variant: the RUL model's p50 and, where the bundle
    has one, its health model's."""
    return float(r["p50_us"]) + float((r.get("health") or {}).get("p50_us", 0.0))


# Variants whose time per window is within this fraction of the fastest's are equally
# fast here (a profile's p50 moves by a few percent between runs on a loaded device):
# among them the most accurate runs.
SPEED_TIE = 0.05


def _accuracy_cost(r: dict[str, Any]) -> float:
    """Holdout RMSE over FP32's; no variant counts as better than FP32 (a reduced
    precision scoring a hair lower on the holdout did so by chance)."""
    ratio = r.get("rmse_ratio")
    return max(float(ratio), 1.0) if ratio is not None else 1.0


def choose(results: dict[str, dict[str, Any]]) -> str | None:
    """Of the variants within the accuracy limit that passed their self-test, the most
    accurate of those as fast as the fastest (p50 per window, with the health model's
    where there is one, within :data:`SPEED_TIE`), then the faster; None if none is fit.
    So a reduced precision runs only where it measured faster than full precision here."""
    fit = {n: r for n, r in results.items() if r["within_accuracy"] and r["self_test"]}
    if not fit:
        return None
    fastest = min(_per_window_us(r) for r in fit.values())
    fast = {n: r for n, r in fit.items() if _per_window_us(r) <= fastest * (1 + SPEED_TIE)}
    return min(fast, key=lambda n: (_accuracy_cost(fast[n]), _per_window_us(fast[n]), n))


def profile(
    bundle: Installed,
    make_scorer: Callable[[Installed, str], Scorer],
    out: Path,
    repeats: int = 20,
) -> dict[str, Any]:
    """Time each variant on the bundle's golden windows; write the choice to ``out``."""
    golden = bundle.golden()
    if golden is None:
        raise ValueError("the bundle has no golden windows to time")
    x = window_features(golden[0], bundle.spec)
    results: dict[str, dict[str, Any]] = {}
    for name, info in bundle.variants().items():
        scorer = make_scorer(bundle, name)
        ok, why = scorer.self_test()
        results[name] = {
            **time_variant(scorer, x, repeats),
            "health": time_health(scorer.health, golden[0], repeats) if scorer.health else None,
            "rmse_ratio": info.rmse_ratio,
            "bytes": info.bytes,
            "within_accuracy": bundle.within_accuracy(name),
            "self_test": ok,
            "self_test_detail": why,
        }
    chosen = choose(results)
    anomaly = bundle.anomaly
    report = {
        "bundle": str(bundle.bundle_id),
        "bundle_version": bundle.version,
        "anomaly_version": anomaly.version if anomaly else None,
        "variant": chosen,
        "accuracy_limit": bundle.manifest.accuracy_limit.model_dump(),
        "windows": len(x),
        "repeats": repeats,
        "variants": results,
    }
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(out)
    return report
