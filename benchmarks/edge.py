"""The edge model in torch eager (the baseline) and in onnxruntime as FP32, FP32 batch 1,
FP16-weight and weight-only INT8 variants — the variants an edge bundle carries, made by
the product's own export code and run through its session builder — and the static
INT8 QDQ graph the bundle carried before (for comparison; onnxruntime's defaults, which
fuse it into int8 kernels), on the same windows, in the same run, single-threaded on the
CPU: single-window latency (p50, p99), windows/s one at a time and in batches, size, and
holdout RMSE against FP32. INT8's speed against FP32 one window at a time is also timed
paired (the two alternate in short blocks, the median of the blocks' ratios), since the
machine's speed drifts between rows. The last line is ``int8_size=<bytes, x fp32>
int8_speed=<x fp32, one window> int8_drmse_pct=<holdout RMSE, % over fp32>``.

The model is trained here for a few seconds on a synthetic task whose RUL is readable
from the window (so that accuracy deltas mean something); features are computed once
beforehand, since every engine shares them (their cost per window is printed apart).

    python -m benchmarks.edge [--kind cnn] [--hidden 32] [--windows 2000] [--repeats 3]
    python -m benchmarks.edge --gpu      # adds torch CUDA, onnxruntime CUDA / TensorRT
                                         # and a TensorRT engine where installed
                                         # (benchmarks/edge_gpu.sh)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edge_export import trt, variants
from pumpfleet import onnx_io, runtime
from pumpfleet.features import FeatureSpec, window_features
from pumpfleet.models import ModelConfig
from pumpfleet.schema import CHANNEL_NAMES
from pumpfleet.tables import format_table
from pumpfleet.training import Arrays, TrainConfig, fit

WINDOW = 24
CAP = 168.0


def _spec() -> FeatureSpec:
    return FeatureSpec(
        pump_class="esp",
        channels=list(CHANNEL_NAMES),
        window=WINDOW,
        stride=4,
        interval_seconds=3600,
        rul_cap_hours=CAP,
        horizon_hours=48,
        mean=[50.0] * len(CHANNEL_NAMES),
        std=[10.0] * len(CHANNEL_NAMES),
    )


def _task(n: int, seed: int, spec: FeatureSpec) -> tuple[np.ndarray, np.ndarray]:
    """Raw windows whose first three channels drift with wear, and their RUL."""
    rng = np.random.default_rng(seed)
    rul = rng.uniform(0, CAP, n)
    raw = rng.normal(50, 10, size=(n, WINDOW, spec.n_channels))
    wear = (1 - rul / CAP)[:, None, None] * np.linspace(0.5, 1.0, WINDOW)[None, :, None]
    raw[..., :3] += 25 * wear
    return raw, rul


def _latencies(fn: Callable[[np.ndarray], Any], x: np.ndarray, repeats: int) -> np.ndarray:
    fn(x[:1])
    out = []
    for _ in range(repeats):
        for i in range(len(x)):
            t = time.perf_counter()
            fn(x[i : i + 1])
            out.append(time.perf_counter() - t)
    return np.asarray(out) * 1e6


def _throughput(fn: Callable[[np.ndarray], Any], x: np.ndarray, batch: int, repeats: int) -> float:
    fn(x[:batch])  # warm up at this batch size
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        for i in range(0, len(x), batch):
            fn(x[i : i + batch])
        rates.append(len(x) / (time.perf_counter() - t))
    return statistics.median(rates)


def _paired_speed(
    a: Callable[[np.ndarray], Any], b: Callable[[np.ndarray], Any], x: np.ndarray, rounds: int
) -> float:
    """b's single-window speed over a's: the two alternate (a b, then b a) in blocks of
    200 windows, ``rounds`` times, after a warm-up; the median of the blocks' ratios."""
    block = x[: min(200, len(x))]

    def took(fn: Callable[[np.ndarray], Any]) -> float:
        t = time.perf_counter()
        for i in range(len(block)):
            fn(block[i : i + 1])
        return time.perf_counter() - t

    took(a), took(b)
    ratios = []
    for r in range(rounds):
        if r % 2:
            tb, ta = took(b), took(a)
        else:
            ta, tb = took(a), took(b)
        ratios.append(ta / tb)
    return statistics.median(ratios)


def _ort_defaults(onnx_bytes: bytes) -> Callable[[np.ndarray], Any]:
    """onnxruntime's default session (QDQ fusions on), one thread."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(onnx_bytes, opts, providers=[runtime.CPU])
    return lambda x: runtime.run(sess, x)


def _ort(onnx_bytes: bytes, providers: list[Any] | None = None) -> Callable[[np.ndarray], Any]:
    import onnxruntime as ort

    if providers is None:
        sess = runtime.session(onnx_bytes, threads=1)
    else:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        sess = ort.InferenceSession(onnx_bytes, opts, providers=providers)
    return lambda x: runtime.run(sess, x)


def _gpu_engines(
    model: torch.nn.Module, fp32: bytes, made: dict[str, bytes], work: Path
) -> list[tuple[str, str, Callable[[np.ndarray], Any] | None, str]]:
    """(name, variant, scorer or None, why not) for every GPU engine asked for."""
    import onnxruntime as ort

    out: list[tuple[str, str, Callable[[np.ndarray], Any] | None, str]] = []
    if torch.cuda.is_available():
        cuda_model = model.to("cuda")

        def torch_cuda(x: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return cuda_model(torch.from_numpy(x).to("cuda")).cpu().numpy()

        out.append(("torch CUDA", "fp32", torch_cuda, ""))
    else:
        out.append(("torch CUDA", "fp32", None, "torch sees no CUDA device"))
    available = set(ort.get_available_providers())
    for provider, label in (("CUDAExecutionProvider", "ORT CUDA"),):
        if provider in available:
            out.append((label, "fp32", _ort(fp32, [provider, "CPUExecutionProvider"]), ""))
        else:
            out.append((label, "fp32", None, f"onnxruntime has no {provider}"))
    if "TensorrtExecutionProvider" in available:
        for name, precision in (("fp32_b1", "fp32"), ("fp16", "fp16"), ("int8", "int8")):
            opts = {
                "trt_engine_cache_enable": True,
                "trt_engine_cache_path": str(work / "ort-trt"),
                "trt_fp16_enable": precision != "fp32",
                "trt_int8_enable": precision == "int8",
            }
            providers = [("TensorrtExecutionProvider", opts), "CPUExecutionProvider"]
            out.append((f"ORT TensorRT {precision}", name, _ort(made[name], providers), ""))
    else:
        out.append(("ORT TensorRT", "fp32", None, "onnxruntime has no TensorRT provider"))
    reason = trt.unavailable()
    if reason is not None or not torch.cuda.is_available():
        out.append(("TensorRT engine", "fp32_b1", None, reason or "no CUDA device"))
        return out
    for name, precision in (("fp32_b1", "fp32"), ("fp16", "fp16"), ("int8", "int8")):
        try:
            out.append(
                (f"TensorRT {precision}", name, _trt_runner(made[name], precision, work), "")
            )
        except Exception as e:  # a build failure is a result to report, not a crash
            out.append((f"TensorRT {precision}", name, None, str(e).splitlines()[0][:60]))
    return out


def _trt_runner(onnx_bytes: bytes, precision: str, work: Path) -> Callable[[np.ndarray], Any]:
    """A TensorRT 10 engine from the product's builder, run with torch CUDA buffers."""
    import tensorrt

    plan = trt.build_engine(onnx_bytes, precision, trt.build_profile(onnx_bytes), work / "trt")
    runtime = tensorrt.Runtime(tensorrt.Logger(tensorrt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(plan.read_bytes())
    context = engine.create_execution_context()
    stream = torch.cuda.Stream()

    def run(x: np.ndarray) -> np.ndarray:
        inp = torch.from_numpy(np.ascontiguousarray(x, np.float32)).to("cuda")
        out = torch.empty((len(x), 2), dtype=torch.float32, device="cuda")
        context.set_input_shape(runtime.INPUT, tuple(inp.shape))
        context.set_tensor_address(runtime.INPUT, inp.data_ptr())
        context.set_tensor_address(runtime.OUTPUT, out.data_ptr())
        context.execute_async_v3(stream.cuda_stream)
        stream.synchronize()
        return out.cpu().numpy()

    return run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.edge", description=__doc__)
    parser.add_argument("--kind", default="cnn", choices=["cnn", "tcn", "gru"])
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--windows", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gpu", action="store_true", help="add the GPU engines")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    spec = _spec()
    train_raw, train_rul = _task(4000, 0, spec)
    hold_raw, hold_rul = _task(args.windows, 1, spec)
    train = Arrays(
        x=window_features(train_raw, spec),
        rul=train_rul.astype(np.float32),
        failure=(train_rul <= spec.horizon_hours).astype(np.int8),
    )
    x = window_features(hold_raw, spec)
    started = time.perf_counter()
    window_features(hold_raw, spec)
    feature_us = (time.perf_counter() - started) / len(hold_raw) * 1e6
    cfg = TrainConfig(model=ModelConfig(kind=args.kind, hidden=args.hidden), epochs=args.epochs)
    n_val = min(500, len(x))
    val = Arrays(
        x=x[:n_val],
        rul=hold_rul[:n_val].astype(np.float32),
        failure=(hold_rul[:n_val] <= spec.horizon_hours).astype(np.int8),
    )
    model, _ = fit(train, val, spec, cfg)
    model.eval()
    fp32 = onnx_io.to_onnx(model, WINDOW, spec.n_channels)
    onnx_io.check_parity(model, fp32, x[:1000])
    made = variants.make_variants(fp32)
    measured = variants.measure(made, x, hold_rul, spec)
    blobs = {v.name: v.onnx for v in made}
    static = variants.to_int8_static(fp32, train.x[:512])
    measured["int8_static"] = variants.measure(
        [variants.Variant(variants.FP32, fp32), variants.Variant(variants.INT8, static)],
        x,
        hold_rul,
        spec,
    )[variants.INT8]

    def torch_eager(w: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(w)).numpy()

    engines: list[tuple[str, str, Callable[[np.ndarray], Any] | None, str]] = [
        ("torch eager", "fp32", torch_eager, ""),
        ("ORT FP32", "fp32", _ort(blobs["fp32"]), ""),
        ("ORT FP32 batch-1", "fp32_b1", _ort(blobs["fp32_b1"]), ""),
        ("ORT FP16 weights", "fp16", _ort(blobs["fp16"]), ""),
        ("ORT INT8 weights", "int8", _ort(blobs["int8"]), ""),
        ("ORT INT8 static QDQ (before)", "int8_static", _ort_defaults(static), ""),
    ]
    with tempfile.TemporaryDirectory(prefix="pumpfleet-edge-bench-") as tmp:
        if args.gpu:
            engines += _gpu_engines(model, fp32, blobs, Path(tmp))
        rows, base = [], None
        ref = runtime.onnx_runner(blobs["fp32"])(x[:256])
        for name, variant, fn, why in engines:
            m = measured[variant]
            if fn is None:
                rows.append([name, variant, "-", "-", "-", "-", "-", "-", "-", f"skipped: {why}"])
                continue
            got = np.concatenate([fn(x[i : i + 1]) for i in range(len(ref))])
            diff = float(np.max(np.abs(got - ref)))
            lat = _latencies(fn, x, args.repeats)
            single = _throughput(fn, x, 1, args.repeats)
            batched = _throughput(fn, x, 1 if variant == "fp32_b1" else args.batch, args.repeats)
            base = base or single
            rows.append(
                [
                    name,
                    variant,
                    f"{np.percentile(lat, 50):.1f}",
                    f"{np.percentile(lat, 99):.1f}",
                    f"{single:,.0f}",
                    f"{batched:,.0f}" + (" (b1)" if variant == "fp32_b1" else ""),
                    f"{single / base:.2f}x",
                    f"{m['bytes']:,} ({m['size_ratio']:.2f})",
                    f"{m['holdout_rmse_hours']:.2f} ({(m['rmse_ratio'] - 1) * 100:+.1f}%)",
                    f"{diff:.1e}",
                ]
            )
    print(
        f"edge model: {args.kind} hidden {args.hidden}, window {WINDOW} x {spec.n_channels}, "
        f"{args.windows} holdout windows, batch {args.batch}, 1 thread, {args.repeats} repeats; "
        f"features {feature_us:.1f} us/window computed in one batch (the same for every "
        "engine, not in the table); "
        f"int8 weights {measured['int8']['weight_ratio']:.2f} of fp32"
    )
    int8_speed = _paired_speed(_ort(blobs["fp32"]), _ort(blobs["int8"]), x, 10 * args.repeats)
    int8 = measured["int8"]
    print(
        format_table(
            [
                "engine",
                "variant",
                "p50 us",
                "p99 us",
                "windows/s (1)",
                f"windows/s ({args.batch})",
                "x torch (1)",
                "bytes (x fp32)",
                "holdout RMSE h (vs fp32)",
                "max |out - ORT fp32|",
            ],
            rows,
        )
    )
    print(
        f"int8 (weight-only) against fp32, paired single-window timing: {int8_speed:.2f}x; "
        f"static QDQ (before): {measured['int8_static']['size_ratio']:.2f} of fp32's bytes"
    )
    print(
        f"int8_size={int8['size_ratio']:.3f} int8_speed={int8_speed:.3f} "
        f"int8_drmse_pct={(int8['rmse_ratio'] - 1) * 100:.2f}"
    )


if __name__ == "__main__":
    main()
