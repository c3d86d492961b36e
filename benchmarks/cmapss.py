"""NASA C-MAPSS, the standard protocol, through the product's own pipeline.

    python -m benchmarks.cmapss [--data-dir DIR] [--subset FD001] [--epochs N] ...

``import_cmapss`` → Ray Data ingest (windows of ``--window`` cycles, RUL capped at 125
cycles, no time holdout) → Ray Tune training → the registered challenger, in
onnxruntime, scores each test unit once, on its last window (a unit with fewer cycles is
padded by repeating its first reading), against ``RUL_FD00X`` capped at 125 cycles: RMSE
and PHM08 score in cycles, beside the published figures. Everything runs in a fresh
workspace under the workspace's ``benchmarks/`` folder, on a local Ray; the result is
written there as JSON. The window and the search were chosen on validation units of the
training set cut like the test set (``_score_val``), never on the test set.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pumpfleet.errors import DataError, PumpfleetError
from pumpfleet.settings import Settings, get_settings
from pumpfleet.tables import format_table

log = logging.getLogger(__name__)

# The settings below were chosen on FD001 validation units (two folds of 20 training
# units, cut like the test set at every cycle from FIRST_CUT on, short prefixes padded),
# never on the test set. RMSE there, mean of the two folds, TCN h32, stride 2:
#   window 30: 14.1   40: 12.7   50: 11.8   60: 12.1   70: 11.9
# The usual window in the literature is 30 (FD001's shortest test unit has 31 cycles);
# 50 is the default here, 30 one flag away (--window 30).
WINDOW = 50
# Stride 1 beat stride 2 at the same 30 epochs (11.45 against 11.78); 45 epochs did not
# beat 30.
STRIDE = 1
CAP = 125  # cycles
HORIZON = 30  # cycles: the failure head's "within the horizon"
FIRST_CUT = 20  # validation units are scored cut at every cycle from this one on
# Share of the training units held out for model selection, and the (minimum) final
# holdout the ingest insists on (the benchmark's holdout is the test set).
VAL_FRACTION = 0.1
HOLDOUT_FRACTION = 0.01
# The search run on every subset. At window 30 a GRU (h64: 14.2) and the first CNN
# (15-18) did no better than the TCN (h32: 14.1), nor did a TCN h64, no failure head, input
# noise or weight averaging; dropout 0.3 was worse (15.0). At window 50 a TCN h48 (11.8)
# and a 2-member ensemble (12.0) did no better than h32. Two seeds train in parallel, one
# per CPU, and the better on validation is registered; ASHA is off (its first rung is the
# last epoch), since with two seeds of one config it would stop one on noise.
SEARCH: dict[str, Any] = {
    "kind": ["tcn"],
    "hidden": [32],
    "dropout": [0.1],
    "lr": [3e-3],
    "batch_size": [128],
    "samples": 2,
    "epochs": 30,
    "seed": 0,
    "metric": "rmse",
    "asha": {"grace_period": 30},
}

# Published test RMSE (FD001, FD003), as quoted in public comparison tables.
PUBLISHED: list[tuple[str, dict[str, float]]] = [
    ("CNN (Babu et al. 2016)", {"FD001": 18.45, "FD003": 19.82}),
    ("LSTM (Zheng et al. 2017)", {"FD001": 16.14, "FD003": 16.18}),
    ("deep CNN (Li et al. 2018)", {"FD001": 12.61, "FD003": 12.64}),
    ("dual-aspect transformer (2022)", {"FD001": 11.43, "FD003": 11.32}),
    ("training mean (published)", {"FD001": 41.9, "FD003": 43.7}),
]


def last_windows(readings: pd.DataFrame, inputs: list[str], window: int) -> tuple[list[str], Any]:
    """Each pump's last ``window`` readings of ``inputs`` ``[P, window, len(inputs)]``,
    pumps in id order; a pump with fewer readings is padded at the front with its first."""
    ids, out = [], []
    for pump, rows in readings.sort_values(["pump_id", "timestamp"]).groupby("pump_id"):
        values = rows[inputs].to_numpy(dtype=np.float64)[-window:]
        if len(values) < window:
            values = np.vstack([np.repeat(values[:1], window - len(values), axis=0), values])
        ids.append(str(pump))
        out.append(values)
    return ids, np.stack(out) if out else np.zeros((0, window, len(inputs)))


def score(pred: Any, true: Any) -> dict[str, float]:
    """RMSE and PHM08 score (in cycles) of predicted against true RUL, both capped."""
    from pumpfleet.metrics import phm08_score, rmse

    pred, true = np.minimum(pred, CAP), np.minimum(true, CAP)
    return {"rmse": rmse(pred, true), "score": phm08_score(pred, true)}


def _read_table(path: Path) -> pd.DataFrame:
    import pyarrow.dataset as pads

    return pads.dataset(str(path), format="parquet", partitioning="hive").to_table().to_pandas()


def _score_test(settings: Settings, test_dir: Path, cls: str, hours: float) -> dict[str, Any]:
    """The registered challenger, in onnxruntime, on each test unit's last window."""
    from pumpfleet import runtime
    from pumpfleet.features import decode_outputs, window_features
    from pumpfleet.models import describe
    from pumpfleet.registry import CHALLENGER, Registry, model_name

    loaded = Registry(settings.tracking_uri, settings.artifact_root).load(
        model_name(cls), CHALLENGER, dst=settings.home / "challenger"
    )
    spec = loaded.spec
    readings = _read_table(test_dir / "readings")
    readings = readings[readings["pump_class"] == cls]
    ids, raw = last_windows(readings, spec.inputs, spec.window)
    # As float32, the precision the snapshot stores windows in and the model was trained
    # on: the ingest keeps sensors that never change (C-MAPSS s1, s5, s10, s16) with a
    # standard deviation of ~1e-12, so float64 readings would standardise them to ~0
    # where training saw the clip value -10.
    raw = raw.astype(np.float32)
    out = runtime.run(runtime.session(loaded.onnx), window_features(raw, spec))
    rul_hours, _ = decode_outputs(out, spec)
    truth = _read_table(test_dir / "truth").set_index("pump_id").loc[ids]
    true = truth["true_rul_cycles"].to_numpy(dtype=np.float64)
    pred = rul_hours / hours
    return {
        **score(pred, true),
        "units": len(ids),
        "window": spec.window,
        "padded": int(sum(n < spec.window for n in readings.groupby("pump_id").size())),
        "model_version": loaded.version,
        "model_config": loaded.model_config,
        "model": describe(loaded.torch_model()),
        "predictions": {i: round(float(p), 2) for i, p in zip(ids, pred, strict=True)},
    }


def cut_windows(values: Any, window: int, first: int) -> Any:
    """The window ending at every cycle from ``first`` on of one pump's readings
    ``[T, C]``, as the test set would show it cut there: ``[T - first + 1, window, C]``,
    padded at the front with the first reading where fewer than ``window`` came before."""
    padded = np.vstack([np.repeat(values[:1], window - 1, axis=0), values])
    ends = np.arange(first, len(values) + 1)  # cycles seen
    return np.stack([padded[t - 1 : t - 1 + window] for t in ends])


def _score_val(
    settings: Settings, snapshot: str, train_dir: Path, cls: str, hours: float
) -> dict[str, Any]:
    """The challenger on the validation units (held out of training), cut like the test
    set: at every cycle from ``FIRST_CUT`` on, only the window ending there scored (shorter
    prefixes padded), against the capped RUL there, in cycles."""
    from pumpfleet import runtime
    from pumpfleet.features import decode_outputs, window_features
    from pumpfleet.registry import CHALLENGER, Registry, model_name
    from pumpfleet.snapshot import open_snapshot

    loaded = Registry(settings.tracking_uri, settings.artifact_root).load(
        model_name(cls), CHALLENGER, dst=settings.home / "challenger-val"
    )
    spec = loaded.spec
    splits = open_snapshot(str(settings.features_dir), snapshot).manifest["splits"]
    readings = _read_table(train_dir / "readings")
    readings = readings[readings["pump_class"] == cls].sort_values(["pump_id", "timestamp"])
    raws, trues = [], []
    for pump, rows in readings.groupby("pump_id"):
        if splits.get(str(pump)) != "val" or len(rows) < FIRST_CUT:
            continue
        raws.append(cut_windows(rows[spec.inputs].to_numpy(np.float64), spec.window, FIRST_CUT))
        trues.append(np.arange(len(rows) - FIRST_CUT, -1, -1, dtype=np.float64))
    raw = np.concatenate(raws).astype(np.float32)  # float32: see _score_test
    out = runtime.run(runtime.session(loaded.onnx), window_features(raw, spec))
    pred = decode_outputs(out, spec)[0] / hours
    return {"units": len(raws), "cuts": len(raw), **score(pred, np.concatenate(trues))}


def _search_space(args: argparse.Namespace) -> Any:
    from pumpfleet.search_space import SearchSpace

    space = {**SEARCH}
    for key in ("kind", "hidden", "lr", "dropout", "batch_size"):
        if getattr(args, key) is not None:
            space[key] = getattr(args, key)
    for key in ("samples", "epochs", "seed"):
        if getattr(args, key) is not None:
            space[key] = getattr(args, key)
    space["asha"] = {"grace_period": space["epochs"]}
    if args.architecture:
        space["architecture"] = json.loads(args.architecture)
    return SearchSpace(**space)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from pumpfleet.adapters.cmapss import import_cmapss, pump_class
    from pumpfleet.schema import read_fleet_schema
    from pumpfleet.windows import WindowConfig
    from ray_jobs._ray import init_ray
    from ray_jobs.ingest import run_ingest
    from ray_jobs.train import run_train

    subset = args.subset.upper()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    bench_dir = get_settings().home / "benchmarks"
    settings = Settings(home=bench_dir / f"cmapss-{subset.lower()}-{stamp}", num_cpus=args.cpus)
    datasets = settings.home / "datasets"
    space = _search_space(args)

    t0 = time.monotonic()
    counts = import_cmapss(subset, Path(args.data_dir), str(datasets), overwrite=True)
    fleet = read_fleet_schema(str(datasets / "train"))
    hours = fleet.interval_seconds / 3600.0  # one cycle, as the adapter maps it
    cfg = WindowConfig(
        window=args.window,
        stride=args.stride,
        rul_cap_hours=CAP * hours,
        horizon_hours=HORIZON * hours,
        val_fraction=args.val_fraction,
        holdout_fraction=HOLDOUT_FRACTION,
        future_fraction=0,
    )
    started_ray = init_ray(settings)
    try:
        t1 = time.monotonic()
        ingest = run_ingest(str(datasets / "train"), str(settings.features_dir), cfg)
        t2 = time.monotonic()
        train = run_train(settings, ingest["snapshot_id"], space)
        t3 = time.monotonic()
    finally:
        if started_ray:
            import ray

            ray.shutdown()
    cls = pump_class(subset)
    if cls not in train["classes"]:
        raise DataError(f"no model was registered for {cls}: every trial failed")
    test = _score_test(settings, datasets / "test", cls, hours)
    val = _score_val(settings, ingest["snapshot_id"], datasets / "train", cls, hours)
    true_train = _train_mean_baseline(datasets / "test", datasets / "train", hours)
    return {
        "subset": subset,
        "workspace": str(settings.home),
        "counts": counts,
        "window_config": cfg.model_dump(),
        "regimes": ingest.get("regimes", {}),
        "windows": ingest["windows"],
        "search_space": space.model_dump(),
        "trained": train["classes"][cls],
        "trials": train["trials"],
        "failed_trials": train.get("failed_trials"),
        "seconds": {
            "import": round(t1 - t0, 1),
            "ingest": round(t2 - t1, 1),
            "train": round(t3 - t2, 1),
        },
        "minutes_training": round((t3 - t2) / 60.0, 2),
        "test": test,
        "val": val,
        "training_mean": true_train,
    }


def _train_mean_baseline(test_dir: Path, train_dir: Path, hours: float) -> dict[str, float]:
    """Predicting every test unit the mean capped RUL of all training cycles."""
    readings = _read_table(train_dir / "readings")
    t = readings.groupby("pump_id")["timestamp"]
    rul = (t.transform("max") - readings["timestamp"]).dt.total_seconds() / 3600.0 / hours
    mean = float(np.minimum(rul, CAP).mean())
    truth = _read_table(test_dir / "truth")["true_rul_cycles"].to_numpy(dtype=np.float64)
    return {"prediction": round(mean, 2), **score(np.full(len(truth), mean), truth)}


def report(result: dict[str, Any]) -> str:
    subset, test, val = result["subset"], result["test"], result["val"]
    cfg, size = test["model_config"], test["model"]
    members = f" x{cfg['members']}" if cfg.get("members", 1) > 1 else ""
    ours = (
        f"this run: {cfg['kind']}{members} h{cfg['hidden']} "
        f"({size['parameters'] / 1000:.1f}k params, {size['bytes'] / 1000:.0f} kB)"
    )
    base = result["training_mean"]
    rows: list[list[object]] = [
        [ours, f"{test['rmse']:.2f}", f"{test['score']:.0f}"],
        ["training mean (this run)", f"{base['rmse']:.2f}", f"{base['score']:.0f}"],
    ]
    for name, figures in PUBLISHED:
        rows.append([name, f"{figures[subset]:.2f}" if subset in figures else "n/a", ""])
    seconds = result["seconds"]
    return "\n".join(
        [
            format_table([f"C-MAPSS {subset} test", "RMSE", "PHM08 score"], rows),
            f"{test['units']} test units, each scored once on its last {test['window']} cycles "
            f"({test['padded']} shorter ones padded with their first reading), RUL capped at "
            f"{CAP}; model {cfg}",
            f"validation, {val['units']} training units held out, cut like the test set at "
            f"every cycle from {FIRST_CUT} on ({val['cuts']} windows): RMSE {val['rmse']:.2f}",
            f"training (Ray Tune, {result['trials']} trials): {result['minutes_training']:.1f} "
            f"min; ingest {seconds['ingest']:.0f} s",
            f"result: {result['json']}",
            f"rmse={test['rmse']:.2f} score={test['score']:.1f} "
            f"minutes={result['minutes_training']:.2f}",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    from pumpfleet.adapters import shared_data_dir

    parser = argparse.ArgumentParser(prog="python -m benchmarks.cmapss", description=__doc__)
    parser.add_argument("--data-dir", default=str(shared_data_dir() / "cmapss"))
    parser.add_argument("--subset", default="FD001")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray")
    parser.add_argument("--window", type=int, default=WINDOW, help="cycles per window")
    parser.add_argument("--stride", type=int, default=STRIDE, help="cycles between windows")
    parser.add_argument("--val-fraction", type=float, default=VAL_FRACTION)
    parser.add_argument("--kind", nargs="+", default=None)
    parser.add_argument("--hidden", nargs="+", type=int, default=None)
    parser.add_argument("--lr", nargs="+", type=float, default=None)
    parser.add_argument("--dropout", nargs="+", type=float, default=None)
    parser.add_argument("--batch-size", nargs="+", type=int, default=None)
    parser.add_argument("--architecture", default=None, help='e.g. {"layers": [3]}')
    parser.add_argument("--samples", type=int, default=None, help="seeds per config")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    try:
        result = run(args)
    except PumpfleetError as e:
        raise SystemExit(f"benchmarks.cmapss: {e}") from None
    out = Path(result["workspace"]) / "result.json"
    result["json"] = str(out)
    out.write_text(json.dumps(result, indent=2, default=str))
    summary = out.parents[1] / f"cmapss-{result['subset'].lower()}.json"
    summary.write_text(json.dumps(result, indent=2, default=str))
    print(report(result))


if __name__ == "__main__":
    main()
