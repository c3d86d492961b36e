"""The monitor's cost and its error rates.

    python -m benchmarks.monitor [--rows 1000000] [--fleets 20] [--chunk-size 50]
                                 [--settings METHOD=SD,... ...] [--consecutive K ...]

1. Cost: a prediction log of ``--rows`` rows over 4 classes (Parquet, as Serve writes
   it) read back and analysed as the monitor does (univariate and PCA drift, CBPE, DLE,
   realised performance), the classes two at a time on 2 processes (as the monitor's
   Ray tasks on 2 CPUs). Wall time and peak memory (max RSS of the driver and of the
   workers).
2. Errors: ``--fleets`` seeded simulated fleets with a drift injected and as many
   without. Each class's windows are split at random into the reference and a stream of
   requests (the demo's setup); halfway through the stream, one class's motor temperature
   reads 15 % high (the same fleet simulated with a ``DriftSpec``: the demo's story). A
   class alerts after 2 drifted chunks in a row. Detection delay (chunks from the first
   chunk with drifted windows to the alert), false alarms per class-chunk (a chunk in
   alert where nothing drifted), and retrains the trigger would start on no-drift fleets,
   for each ``--settings``: drift methods and their thresholds (reference chunks' mean +
   SD standard deviations), the monitor's own (``pumpfleet.drift.MULTIPLIERS``) against
   the Kolmogorov-Smirnov setting it replaced, by default.
   Also measured: how often a time-ordered stream of a no-drift fleet (days 20-40 against
   days 2-20) is flagged; small simulated fleets age and change regime.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pumpfleet.alerts import AlertPolicy, TriggerState, decide_retrains, drift_wanted, hysteresis
from pumpfleet.drift import MULTIPLIERS, PCA, AnalysisConfig, analyse_class, shuffled_reference
from pumpfleet.schema import CLASS_CHANNELS, PUMP_CLASSES
from pumpfleet.tables import format_table

FEATURES = 6
REF_DAYS, DAYS, PUMPS = (2, 20), 40, 32
WINDOW, STRIDE = 24, 4
NAMES = {
    "failure_probability": "y_prob",
    "rul_hours": "rul_pred",
    "failure_within_horizon": "y_true",
}


def _maxrss_mb(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024


# --- 1. cost on a large log ----------------------------------------------------------


def _frame(n: int, rng: np.random.Generator, start: pd.Timestamp) -> pd.DataFrame:
    x = rng.normal(0, 1, (n, FEATURES))
    logit = x[:, 0] - 0.5 * x[:, 1] - 1.5
    prob = 1 / (1 + np.exp(-logit))
    rul = np.clip(100 - 20 * x[:, 0] + rng.normal(0, 10, n), 0, 168)
    f = pd.DataFrame({f"in_f{i}": x[:, i] for i in range(FEATURES)})
    f["timestamp"] = start + pd.to_timedelta(np.arange(n) * 10, unit="s")
    f["failure_probability"] = prob
    f["rul_hours"] = rul
    f["failure_within_horizon"] = (rng.random(n) < prob).astype(int)
    f["rul_true"] = np.clip(rul + rng.normal(0, 12, n), 0, 168)
    return f


def _analyse_log_part(args: tuple[str, str, int]) -> tuple[str, float, int, float]:
    path, cls, chunk = args
    t = time.perf_counter()
    rows = pd.read_parquet(path)
    ref = shuffled_reference(
        _frame(20_000, np.random.default_rng(1), pd.Timestamp("2025-01-01", tz="UTC"))
    )
    ref = ref.rename(columns=lambda c: c.removeprefix("in_")).rename(columns=NAMES)
    ref["y_pred"] = (ref["y_prob"] >= 0.5).astype(int)
    a = rows.rename(columns=lambda c: c.removeprefix("in_")).rename(columns=NAMES)
    a["y_pred"] = (a["y_prob"] >= 0.5).astype(int)
    a.loc[a.index[: len(a) // 2], ["y_true", "rul_true"]] = np.nan  # labels for the later half
    feats = [f"f{i}" for i in range(FEATURES)]
    r = analyse_class(cls, ref, a, feats, AnalysisConfig(chunk_size=chunk), perf_reference=ref)
    return cls, time.perf_counter() - t, len(r.drifted()), _maxrss_mb()


def cost(rows: int, chunk: int) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    per = rows // 4
    with tempfile.TemporaryDirectory(prefix="bench-monitor-") as tmp:
        paths = []
        for i, cls in enumerate(PUMP_CLASSES[:4]):
            f = _frame(per, rng, pd.Timestamp("2026-01-01", tz="UTC"))
            f.iloc[per // 2 :, 0] += 0.3 * (i == 0)  # one class drifts halfway
            p = Path(tmp) / f"{cls}.parquet"
            f.to_parquet(p)
            paths.append((str(p), cls, chunk))
        t = time.perf_counter()
        with ProcessPoolExecutor(2) as pool:
            out = list(pool.map(_analyse_log_part, paths))
        wall = time.perf_counter() - t
    return {
        "rows": per * 4,
        "chunk_size": chunk,
        "wall_s": wall,
        "per_class_s": {c: s for c, s, _, _ in out},
        "chunks_per_class": out[0][2],
        "peak_worker_mb": max(m for *_, m in out),
        "peak_driver_mb": _maxrss_mb(),
    }


# --- 2. detection and false alarms on simulated fleets ------------------------------


def window_means(readings: pd.DataFrame, channels: list[str]) -> pd.DataFrame:
    """Per pump, the mean of each channel over 24-reading windows every 4 readings: the
    summary the prediction log keeps for every scored window."""
    out = []
    for _, g in readings.sort_values("timestamp").groupby("pump_id", sort=False):
        m = g[channels].rolling(WINDOW, min_periods=WINDOW // 2).mean()
        m["timestamp"] = g["timestamp"].to_numpy()
        out.append(m.iloc[WINDOW - 1 :: STRIDE])
    return pd.concat(out, ignore_index=True).dropna(how="all", subset=channels)


def _fleet(seed: int, drifts: list[Any]) -> pd.DataFrame:
    from pumpfleet.simulator import SimulationConfig, simulate

    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        simulate(SimulationConfig(pumps=PUMPS, days=DAYS, seed=seed, drifts=drifts), tmp)
        readings = pd.read_parquet(Path(tmp) / "readings")
    readings["pump_class"] = readings["pump_class"].astype(str)
    return readings


# The monitor's drift methods and thresholds, and the setting they replaced.
CURRENT = ",".join(f"{m}={k:g}" for m, k in MULTIPLIERS.items() if m != "kolmogorov_smirnov")
BEFORE = "kolmogorov_smirnov=4.5,pca=4.5"


def config(spec: str, chunk: int) -> AnalysisConfig:
    """``method=sd,...`` as the monitor's analysis: the univariate methods named, PCA
    reconstruction error where ``pca`` is, each at its multiplier."""
    pairs = dict(item.split("=") for item in spec.split(","))
    multipliers = {m: float(k) for m, k in pairs.items()}
    methods = tuple(m for m in multipliers if m != PCA)
    return AnalysisConfig(
        chunk_size=chunk,
        performance=False,
        multivariate=PCA in multipliers,
        continuous_methods=methods,
        multipliers=multipliers,
    )


def one_fleet(args: tuple[int, bool, int, tuple[str, ...]]) -> dict[str, Any]:
    """One fleet: the stream is windows drawn at random from its history (disjoint from
    the reference's), as the demo's requests are; from the stream's middle on, the target
    class's windows come from the same fleet simulated with the drift (same seed: the
    same pumps and events, the sensor reading 15 % high). No-drift fleets also get a
    time-ordered stream (every window after day 20 against days 2-20)."""
    from pumpfleet.faults import DriftSpec
    from pumpfleet.simulator import START

    seed, drifted, chunk, settings = args
    target = PUMP_CLASSES[seed % 4] if drifted else None
    base = _fleet(seed, [])
    shifted = None
    if target:
        spec = DriftSpec(
            kind="offset", classes=(target,), channel="motor_temp", scale=1.15, start_day=0.0
        )
        shifted = _fleet(seed, [spec])
    rng = np.random.default_rng(seed)
    result: dict[str, Any] = {"seed": seed, "drifted": target, "classes": {}, "ordered": {}}
    t0 = pd.Timestamp(START)
    for cls in PUMP_CLASSES:
        mine = base[base.pump_class == cls]
        chans = [c for c in CLASS_CHANNELS[cls] if mine[c].notna().any()]
        w = window_means(mine, chans)
        order = rng.permutation(len(w))
        ref_idx, stream_idx = order[: len(w) // 2], order[len(w) // 2 :]
        ref = shuffled_reference(w.iloc[ref_idx].reset_index(drop=True), seed)
        stream = w.iloc[stream_idx].reset_index(drop=True)
        half = len(stream) // 2
        if cls == target and shifted is not None:
            ws = window_means(shifted[shifted.pump_class == cls], chans)
            stream.iloc[half:] = ws.iloc[stream_idx[half:]].to_numpy()
        stream["timestamp"] = t0 + pd.to_timedelta(np.arange(len(stream)), unit="min")
        first = half // chunk if cls == target else None
        for spec in settings:
            flags = analyse_class(cls, ref, stream, chans, config(spec, chunk)).drifted()
            result["classes"].setdefault(spec, {})[cls] = {
                "flags": flags,
                "first_drift_chunk": first,
            }
        if target is None:  # the same fleet in time order
            ts = pd.to_datetime(w["timestamp"], utc=True)
            lo, hi = (t0 + timedelta(days=d) for d in REF_DAYS)
            ordered_ref = shuffled_reference(w[(ts >= lo) & (ts < hi)].reset_index(drop=True))
            later = w[ts >= hi].sort_values("timestamp").reset_index(drop=True)
            for spec in settings:
                cfg = config(spec, chunk)
                flags = analyse_class(cls, ordered_ref, later, chans, cfg).drifted()
                result["ordered"].setdefault(spec, {})[cls] = flags
    return result


def simulate_fleets(
    fleets: int, chunk: int, settings: tuple[str, ...], first_seed: int = 0
) -> list[dict[str, Any]]:
    jobs = [(first_seed + s, True, chunk, settings) for s in range(fleets)]
    jobs += [(1000 + first_seed + s, False, chunk, settings) for s in range(fleets)]
    with ProcessPoolExecutor(2) as pool:
        return list(pool.map(one_fleet, jobs))


def errors(results: list[dict[str, Any]], m: str, k: int) -> dict[str, Any]:
    policy = AlertPolicy(consecutive=k, clear_after=k)
    fleets = sum(r["drifted"] is not None for r in results)
    delays, missed = [], 0
    fa_chunks = fa_alert = clean_chunks = 0
    retrains_nodrift = ordered_chunks = ordered_flags = 0
    now = pd.Timestamp("2026-03-01", tz="UTC").to_pydatetime()
    for res in results:
        alerts = {}
        for cls, c in res["classes"][m].items():
            a = hysteresis(cls, c["flags"], policy)
            alerts[cls] = a
            n_clean = len(c["flags"]) if cls != res["drifted"] else c["first_drift_chunk"]
            active = _active_chunks(a, len(c["flags"]))
            clean_chunks += n_clean
            fa_chunks += sum(c["flags"][:n_clean])
            fa_alert += sum(active[:n_clean])
            if cls == res["drifted"]:
                raised = [e.raised for e in a.episodes if e.raised >= (c["first_drift_chunk"] or 0)]
                if raised:
                    delays.append(raised[0] - c["first_drift_chunk"])
                else:
                    missed += 1
        for flags in res["ordered"].get(m, {}).values():
            ordered_chunks += len(flags)
            ordered_flags += sum(flags)
        if res["drifted"] is None:
            starts = decide_retrains(drift_wanted(alerts, {}), set(), TriggerState(), now, policy)
            retrains_nodrift += sum(t.start for t in starts)
    return {
        "fleets": fleets,
        "delays": delays,
        "missed": missed,
        "clean_chunks": clean_chunks,
        "flag_rate": fa_chunks / max(1, clean_chunks),
        "false_alarm_rate": fa_alert / max(1, clean_chunks),
        "retrains_nodrift": retrains_nodrift,
        "ordered_flag_rate": ordered_flags / max(1, ordered_chunks),
        "ordered_chunks": ordered_chunks,
    }


def _active_chunks(alert: Any, n: int) -> list[bool]:
    on = [False] * n
    for e in alert.episodes:
        for i in range(e.raised, e.cleared if e.cleared is not None else n):
            on[i] = True
    return on


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.monitor", description=__doc__)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--log-chunk-size", type=int, default=5000)
    p.add_argument("--fleets", type=int, default=20, help="drifted fleets, and as many without")
    p.add_argument("--chunk-size", type=int, default=50)
    p.add_argument(
        "--settings", nargs="+", default=[BEFORE, CURRENT],
        help="drift settings to compare, each METHOD=SD,... (pca: the multivariate signal)",
    )  # fmt: skip
    p.add_argument(
        "--first-seed", type=int, default=0,
        help="seeds of the drifted fleets (no-drift fleets: 1000 more); another range "
        "checks settings on fleets they were not chosen on",
    )  # fmt: skip
    p.add_argument(
        "--consecutive", type=int, nargs="+", default=[2],
        help="drifted chunks in a row that raise an alert, to compare",
    )  # fmt: skip
    args = p.parse_args(argv)
    os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")
    c = cost(args.rows, args.log_chunk_size)
    per_class = ", ".join(f"{k} {v:.1f}" for k, v in c["per_class_s"].items())
    print(f"1. drift and performance on a logged-prediction table, 2 processes "
          f"(chunks of {c['chunk_size']:,}: {c['chunks_per_class']} per class)")  # fmt: skip
    rows = [
        ["predictions analysed (4 classes)", f"{c['rows']:,}", "1,000,000"],
        ["wall time", f"{c['wall_s']:.1f} s", "< 60 s"],
        ["per class", f"{per_class} s", "-"],
        ["peak memory, worker (max RSS)", f"{c['peak_worker_mb']:.0f} MB", "-"],
        ["peak memory, driver (max RSS)", f"{c['peak_driver_mb']:.0f} MB", "-"],
    ]
    print(format_table(["measure", "result", "target"], rows))
    settings = tuple(args.settings)
    t = time.perf_counter()
    results = simulate_fleets(args.fleets, args.chunk_size, settings, args.first_seed)
    combos = [(m, k) for m in settings for k in args.consecutive]
    es = {mk: errors(results, *mk) for mk in combos}
    e0 = es[combos[0]]
    print(
        f"\n2. {e0['fleets']} simulated fleets with a drift and {e0['fleets']} without "
        f"({PUMPS} pumps x {DAYS} days each, chunks of {args.chunk_size} windows; "
        f"{time.perf_counter() - t:.0f} s; seeds {args.first_seed}..."
        f"{args.first_seed + args.fleets - 1} and {1000 + args.first_seed}..."
        f"{1000 + args.first_seed + args.fleets - 1}). Setting: method=SD (alert above the "
        "reference chunks' mean + SD standard deviations); k: drifted chunks in a row that "
        "raise an alert"
    )
    table = []
    letter = {m: chr(ord("A") + i) for i, m in enumerate(settings)}
    for name, key, target in (
        ("detection delay, chunks (median / max)", "delay", "<= 2"),
        ("drifts missed", "missed", "0"),
        ("drifted-chunk flags where nothing drifted", "flags", "-"),
        ("false alarms per class-chunk", "fa", "<= 2 %"),
        ("retrains started on no-drift fleets", "retrains", "0"),
        ("time-ordered no-drift streams: chunks flagged", "ordered", "-"),
    ):
        table.append([name, *(_cell(es[mk], key) for mk in combos), target])
    print(format_table(["measure", *(f"{letter[m]}, k={k}" for m, k in combos), "target"], table))
    for m in settings:
        print(f"{letter[m]}: {m}")
    print(
        f"(time-ordered streams: the no-drift fleets' days 20-{DAYS} against days 2-20, "
        f"{e0['ordered_chunks']} class-chunks)"
    )


def _cell(e: dict[str, Any], key: str) -> str:
    if key == "delay":
        if not e["delays"]:
            return "-"
        return f"{np.median(e['delays']):.0f} / {max(e['delays'])}"
    if key == "missed":
        return f"{e['missed']} of {e['fleets']}"
    if key == "flags":
        return f"{e['flag_rate']:.2%} of {e['clean_chunks']}"
    if key == "fa":
        return f"{e['false_alarm_rate']:.2%}"
    if key == "ordered":
        return f"{e['ordered_flag_rate']:.0%}"
    return str(e["retrains_nodrift"])


if __name__ == "__main__":
    main()
