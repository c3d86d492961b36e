"""Profiling on the target: time every model variant of the current bundle on this
device and pick the fastest whose accuracy cost (measured at export on the holdout) is
within the bundle's limit and which passes its self-test here."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.model import Installed, Scorer
from pumpfleet.features import window_features


def time_variant(scorer: Scorer, x: np.ndarray, repeats: int) -> dict[str, float]:
    """Single-window latency (p50, p99, µs) over ``repeats`` passes of windows ``x``."""
    scorer.scores(x[:1])  # warm up (and, with TensorRT, build the engine)
    lat = []
    for _ in range(repeats):
        for i in range(len(x)):
            t = time.perf_counter()
            scorer.scores(x[i : i + 1])
            lat.append(time.perf_counter() - t)
    us = np.asarray(lat) * 1e6
    return {
        "p50_us": round(float(np.percentile(us, 50)), 2),
        "p99_us": round(float(np.percentile(us, 99)), 2),
    }


def choose(results: dict[str, dict[str, Any]]) -> str | None:
    """The fastest (p50) variant that is within the accuracy limit and passed its
    self-test; None if none did."""
    fit = {n: r for n, r in results.items() if r["within_accuracy"] and r["self_test"]}
    return min(fit, key=lambda n: (fit[n]["p50_us"], n)) if fit else None


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
            "rmse_ratio": info.get("rmse_ratio"),
            "bytes": info.get("bytes"),
            "within_accuracy": bundle.within_accuracy(name),
            "self_test": ok,
            "self_test_detail": why,
        }
    chosen = choose(results)
    report = {
        "bundle_version": bundle.version,
        "variant": chosen,
        "accuracy_limit": bundle.manifest.get("accuracy_limit"),
        "windows": len(x),
        "repeats": repeats,
        "variants": results,
    }
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(out)
    return report
