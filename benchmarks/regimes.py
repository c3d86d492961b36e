"""What per-regime normalisation buys: the same fleet ingested with regimes and without
(per-class statistics only), the same Tune search on each, holdout RMSE per class.

    python -m benchmarks.regimes [--pumps 32] [--days 45] [--epochs 8] [--seed 0]

Each arm has its own workspace; both run on one local Ray with 2 CPUs. The baseline is
the training-mean RUL, which is the same in both arms.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from benchmarks._local_ray import local_ray
from pumpfleet.settings import Settings
from pumpfleet.simulator import SimulationConfig, simulate
from pumpfleet.tables import format_table
from pumpfleet.windows import WindowConfig


def _arm(
    root: Path, data: Path, regimes: bool, epochs: int, seed: int, kinds: list[str]
) -> dict[str, Any]:
    from pumpfleet.evaluation_run import run_evaluate
    from pumpfleet.search_space import SearchSpace
    from ray_jobs.ingest import run_ingest
    from ray_jobs.train import run_train

    settings = Settings(home=root)
    snap = run_ingest(str(data), str(settings.features_dir), WindowConfig(regimes=regimes))
    started = time.perf_counter()
    space = SearchSpace(kind=kinds, epochs=epochs, seed=seed)
    train = run_train(settings, snap["snapshot_id"], space)
    seconds = time.perf_counter() - started
    ev = run_evaluate(settings, snap["snapshot_id"])["classes"]
    return {
        "regimes": snap["regimes"],
        "train_seconds": round(seconds, 1),
        "classes": {
            c: {
                "holdout_rmse": r["challenger_report"]["rmse"],
                "baseline_rmse": r["baseline_report"]["rmse"],
                "val_rmse": train["classes"][c]["val_rmse"],
            }
            for c, r in ev.items()
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.regimes", description=__doc__)
    parser.add_argument("--pumps", type=int, default=32)
    parser.add_argument("--days", type=int, default=45)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kind", nargs="+", default=["cnn"], help="model kinds searched")
    args = parser.parse_args(argv)

    root = Settings().home / "benchmarks" / f"regimes-{int(time.time())}"
    data = root / "data"
    simulate(SimulationConfig(pumps=args.pumps, days=args.days, seed=args.seed), str(data))
    with local_ray(2):
        on = _arm(root / "per-regime", data, True, args.epochs, args.seed, args.kind)
        off = _arm(root / "per-class", data, False, args.epochs, args.seed, args.kind)
    rows = []
    for cls in sorted(on["classes"]):
        a, b = on["classes"][cls], off["classes"].get(cls)
        if b is None:
            continue
        rows.append(
            [
                cls,
                on["regimes"].get(cls, {}).get("k", 1),
                f"{b['holdout_rmse']:.1f}",
                f"{a['holdout_rmse']:.1f}",
                f"{b['holdout_rmse'] / a['holdout_rmse']:.2f}x",
                f"{b['val_rmse']:.1f}",
                f"{a['val_rmse']:.1f}",
                f"{a['baseline_rmse']:.1f}",
            ]
        )
    print(
        format_table(
            [
                "class",
                "regimes",
                "holdout RMSE h (per class)",
                "holdout RMSE h (per regime)",
                "ratio",
                "val RMSE (per class)",
                "val RMSE (per regime)",
                "baseline RMSE h",
            ],
            rows,
        )
    )
    out = root / "result.json"
    out.write_text(json.dumps({"args": vars(args), "per_regime": on, "per_class": off}, indent=2))
    print(f"result: {out}")


if __name__ == "__main__":
    main()
