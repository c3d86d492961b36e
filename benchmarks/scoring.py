"""The scoring path — features from a raw window, then the model — in torch eager (the
baseline) and in onnxruntime (what Serve and the edge run), on the same windows, in
the same run, single-threaded; and in onnxruntime with the class's health (anomaly) model
beside it, as Serve and the edge score a class that has one (features, RUL model, conv-AE
error, health score and flag).

    python -m benchmarks.scoring [--windows 2000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from pumpfleet import onnx_io, runtime
from pumpfleet.anomaly import AnomalyConfig, build_autoencoder, window_errors
from pumpfleet.features import FeatureSpec, decode_outputs, window_features
from pumpfleet.health import calibrate
from pumpfleet.models import ModelConfig, build_model
from pumpfleet.schema import CHANNEL_NAMES
from pumpfleet.tables import format_table

WINDOW = 24


def _spec() -> FeatureSpec:
    return FeatureSpec(
        pump_class="esp",
        channels=list(CHANNEL_NAMES),
        window=WINDOW,
        stride=4,
        interval_seconds=3600,
        rul_cap_hours=168,
        horizon_hours=48,
        mean=[50.0] * len(CHANNEL_NAMES),
        std=[10.0] * len(CHANNEL_NAMES),
    )


def _time_single(fn: Callable[[np.ndarray], object], raw: np.ndarray) -> list[float]:
    out = []
    for w in raw:
        t = time.perf_counter()
        fn(w[None])
        out.append(time.perf_counter() - t)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scoring", description=__doc__)
    parser.add_argument("--windows", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    spec = _spec()
    model = build_model(spec.n_channels, ModelConfig())
    model.eval()
    sess = runtime.session(onnx_io.to_onnx(model, WINDOW, spec.n_channels), threads=1)
    raw = np.random.default_rng(0).normal(50, 10, size=(args.windows, WINDOW, spec.n_channels))

    def torch_path(x: np.ndarray) -> object:
        with torch.no_grad():
            out = model(torch.from_numpy(window_features(x, spec))).numpy()
        return decode_outputs(out, spec)

    def ort_path(x: np.ndarray) -> object:
        return decode_outputs(runtime.run(sess, window_features(x, spec)), spec)

    ae = build_autoencoder(spec.n_channels, AnomalyConfig())
    ae.eval()
    ae_sess = runtime.session(onnx_io.to_onnx(ae, WINDOW, spec.n_channels), threads=1)
    health = calibrate(window_errors(ae, window_features(raw[:500], spec)), "conv_ae")

    def ort_health_path(x: np.ndarray) -> object:
        features = window_features(x, spec)
        errors = runtime.run(ae_sess, features)
        rul = decode_outputs(runtime.run(sess, features), spec)
        return rul, health.score(errors), health.flag(errors)

    # Same answers first: a benchmark of two different computations means nothing.
    a, b = torch_path(raw[:256]), ort_path(raw[:256])
    diff = max(float(np.max(np.abs(x - y))) for x, y in zip(a, b, strict=True))  # type: ignore[call-overload]

    rows = []
    results: dict[str, dict[str, float]] = {}
    engines = (
        ("torch eager", torch_path),
        ("onnxruntime", ort_path),
        ("onnxruntime + health", ort_health_path),
    )
    for name, fn in engines:
        singles, batched = [], []
        for _ in range(args.repeats):
            singles.append(_time_single(fn, raw))
            t = time.perf_counter()
            for i in range(0, len(raw), args.batch):
                fn(raw[i : i + args.batch])
            batched.append(len(raw) / (time.perf_counter() - t))
        lat = np.concatenate(singles) * 1e6
        results[name] = {
            "p50": float(np.percentile(lat, 50)),
            "p99": float(np.percentile(lat, 99)),
            "single_wps": 1e6 / float(np.mean(lat)),
            "batch_wps": statistics.median(batched),
        }
    base = results["torch eager"]
    for name, r in results.items():
        rows.append(
            [
                name,
                f"{r['p50']:.1f}",
                f"{r['p99']:.1f}",
                f"{r['single_wps']:,.0f}",
                f"{r['batch_wps']:,.0f}",
                f"{r['single_wps'] / base['single_wps']:.2f}x",
                f"{r['batch_wps'] / base['batch_wps']:.2f}x",
            ]
        )
    print(
        f"scoring path: {args.windows} windows of {WINDOW} x {spec.n_channels}, "
        f"batch {args.batch}, 1 thread, {args.repeats} repeats; max |torch - ort| = {diff:.1e}"
    )
    print(
        format_table(
            [
                "engine",
                "p50 us",
                "p99 us",
                "windows/s (1)",
                f"windows/s ({args.batch})",
                "x torch (1)",
                f"x torch ({args.batch})",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
