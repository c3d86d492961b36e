"""K-fold cross-validation over C-MAPSS training units, cut like the test set: how
``benchmarks.cmapss`` chooses its window and the gbm's lookback on training units only.

    python -m benchmarks.cmapss_cv --subset FD001 [--folds 5] [--options 30 50 50:30]

An option is ``<window>`` or ``<window>:<lookback>`` (the gbm with a second group of
boosters on the window's last ``lookback`` steps, :class:`pumpfleet.boosting.BoostedTrees`).
Each fold holds out every ``folds``-th training unit, standardises with the other units'
statistics, trains the RUL boosters on their windows (the pipeline's model code:
:class:`pumpfleet.window_stats.WindowStats` and LightGBM with
:func:`pumpfleet.boosting.fit_boosted`'s parameters, one booster a group, early stopping
on the held-out units' windows as the pipeline does on its validation units) and scores
the held-out units cut at every cycle from ``FIRST_CUT`` on, padded at the front like a
short test unit, as :func:`benchmarks.cmapss_scoring.score_val` does. The test set is
never read. Normalisation is over all readings (FD001 and FD003 have one operating
condition; the pipeline's per-regime statistics are not reproduced here).
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.cmapss_scoring import CAP, FIRST_CUT, cut_windows, score

log = logging.getLogger(__name__)

FOLDS = 5
CV_LR = 0.05  # one booster a group at a faster rate than the search's 0.02
CLIP = 10.0


def load_units(data_dir: Path, subset: str) -> tuple[list[np.ndarray], list[str]]:
    """Each training unit's sensor readings ``[T, 21]`` (raw), units in order."""
    from pumpfleet.adapters._io import find_file
    from pumpfleet.adapters.cmapss import SENSORS, read_table

    df = read_table(find_file(data_dir, f"train_{subset}.txt"))
    df = df.sort_values(["unit", "cycle"])
    return [g[list(SENSORS)].to_numpy(np.float64) for _, g in df.groupby("unit")], list(SENSORS)


def standardise(units: list[np.ndarray], train_idx: list[int]) -> list[np.ndarray]:
    """z-scores with the training units' statistics (one regime: FD001, FD003)."""
    stack = np.concatenate([units[i] for i in train_idx])
    mean, std = stack.mean(axis=0), stack.std(axis=0)
    std = np.where(std > 1e-9, std, 1.0)
    return [np.clip((u - mean) / std, -CLIP, CLIP).astype(np.float32) for u in units]


def full_windows(u: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Every full window of one unit and its capped RUL (stride 1, as the ingest cuts)."""
    ends = np.arange(window - 1, len(u))
    x = np.lib.stride_tricks.sliding_window_view(u, window, axis=0)[ends - (window - 1)]
    return np.ascontiguousarray(x.transpose(0, 2, 1)), np.minimum(len(u) - 1 - ends, CAP)


def features(x: np.ndarray, stats: str, sub: int = 0) -> np.ndarray:
    from pumpfleet.boosting import _window_features

    return _window_features(x[:, -sub:] if sub else x, stats == "multiscale")


def fit_predict(
    train: list[np.ndarray],
    held: list[np.ndarray],
    window: int,
    stats: str,
    lr: float,
    seed: int,
    sub: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Predicted and true RUL (cycles) of the held-out units' cuts."""
    import lightgbm as lgb

    xs, ys = zip(*(full_windows(u, window) for u in train if len(u) >= window), strict=True)
    vx, vy = zip(*(full_windows(u, window) for u in held if len(u) >= window), strict=True)
    f_train = features(np.concatenate(xs), stats, sub)
    f_val = features(np.concatenate(vx), stats, sub)
    params = {
        "learning_rate": lr,
        "num_leaves": 15,
        "min_data_in_leaf": 50,
        "feature_fraction": 0.5,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "lambda_l2": 1.0,
        "num_threads": os.cpu_count() or 1,
        "seed": seed,
        "deterministic": True,
        "verbose": -1,
        "objective": "l2",
    }
    d_train = lgb.Dataset(f_train, np.concatenate(ys) / CAP)
    d_val = lgb.Dataset(f_val, np.concatenate(vy) / CAP, reference=d_train)
    booster = lgb.train(
        params,
        d_train,
        1500,
        valid_sets=[d_val],
        callbacks=[lgb.early_stopping(100, verbose=False)],
    )
    cuts = np.concatenate([cut_windows(u, window, FIRST_CUT) for u in held if len(u) >= FIRST_CUT])
    true = np.concatenate(
        [np.arange(len(u) - FIRST_CUT, -1, -1) for u in held if len(u) >= FIRST_CUT]
    )
    pred = np.clip(booster.predict(features(cuts.astype(np.float32), stats, sub)), 0, 1) * CAP
    return pred, true.astype(np.float64)


def cross_validate(
    units: list[np.ndarray],
    options: list[tuple[int, str, list[int]]],
    folds: int,
    lr: float,
    seed: int,
) -> dict[str, Any]:
    """RMSE of each option over all held-out cuts, and per fold."""
    out: dict[str, Any] = {}
    preds: dict[str, list[np.ndarray]] = {}
    trues: list[np.ndarray] = []
    for k in range(folds):
        held_idx = [i for i in range(len(units)) if i % folds == k]
        train_idx = [i for i in range(len(units)) if i % folds != k]
        z = standardise(units, train_idx)
        train, held = [z[i] for i in train_idx], [z[i] for i in held_idx]
        for window, stats, subs in options:
            name = f"{window}:{stats}:{','.join(map(str, subs))}"
            t0 = time.monotonic()
            runs = [
                fit_predict(train, held, window, stats, lr, seed + 7919 * j, s)
                for j, s in enumerate([0, *subs])
            ]
            pred, true = np.mean([r[0] for r in runs], axis=0), runs[0][1]
            preds.setdefault(name, []).append(pred)
            out.setdefault(name, {"folds": []})["folds"].append(score(pred, true)["rmse"])
            log.info(
                "fold %d %s: %.2f (%.0f s)", k, name, out[name]["folds"][-1], time.monotonic() - t0
            )
        trues.append(true)
    true_all = np.concatenate(trues)
    for name, p in preds.items():
        out[name]["rmse"] = score(np.concatenate(p), true_all)["rmse"]
        out[name]["pred"] = np.concatenate(p)
    out["_true"] = true_all
    return out


def parse_option(text: str) -> tuple[int, int]:
    """``50`` or ``50:30`` → (window, lookback)."""
    window, _, lookback = text.partition(":")
    return int(window), int(lookback or 0)


def option_name(window: int, lookback: int) -> str:
    return f"{window}:{lookback}" if lookback else str(window)


def choose(
    data_dir: Path,
    subset: str,
    options: list[tuple[int, int]],
    stats: str = "multiscale",
    folds: int = FOLDS,
    lr: float = CV_LR,
    seed: int = 0,
) -> dict[str, Any]:
    """Each option's cross-validated RMSE (all held-out cuts together, and per fold) and
    the option with the lowest."""
    t0 = time.monotonic()
    units, _ = load_units(data_dir, subset)
    res = cross_validate(
        units, [(w, stats, [lb] if lb else []) for w, lb in options], folds, lr, seed
    )
    res.pop("_true")
    figures: dict[str, dict[str, Any]] = {
        option_name(w, lb): {
            "window": w,
            "lookback": lb,
            "cv_rmse": round(float(r["rmse"]), 3),
            "folds": [round(float(f), 3) for f in r["folds"]],
        }
        for (w, lb), r in zip(options, res.values(), strict=True)
    }
    best = min(figures.values(), key=lambda v: v["cv_rmse"])
    return {
        "options": figures,
        "window": best["window"],
        "lookback": best["lookback"],
        "folds": folds,
        "units": len(units),
        "lr": lr,
        "stats": stats,
        "minutes": round((time.monotonic() - t0) / 60.0, 2),
    }


def main(argv: list[str] | None = None) -> None:
    from pumpfleet.adapters import shared_data_dir

    p = argparse.ArgumentParser(prog="python -m benchmarks.cmapss_cv", description=__doc__)
    p.add_argument("--data-dir", default=str(shared_data_dir() / "cmapss"))
    p.add_argument("--subset", default="FD001")
    p.add_argument("--folds", type=int, default=FOLDS)
    p.add_argument("--lr", type=float, default=CV_LR)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stats", default="multiscale")
    p.add_argument("--options", nargs="+", default=["30", "50", "50:30"])
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    options = [parse_option(o) for o in args.options]
    out = choose(
        Path(args.data_dir),
        args.subset.upper(),
        options,
        args.stats,
        args.folds,
        args.lr,
        args.seed,
    )
    for name, r in out["options"].items():
        print(f"{name}: rmse {r['cv_rmse']:.2f} folds {' '.join(f'{f:.2f}' for f in r['folds'])}")
    print(f"window={out['window']} lookback={out['lookback']} minutes={out['minutes']:.1f}")


if __name__ == "__main__":
    main()
