"""Training the pump classes in parallel on Ray Tune against one class after another.

    python -m benchmarks.train_parallel [--pumps 48] [--days 60] [--epochs 4] [--lr 0.01]

Both arms run the product's ``run_train`` on the same snapshot and the same search (one
trial per class per learning rate) on one local Ray with 2 CPUs, one thread per trial:
"parallel" is one experiment over every class; "sequential" is one experiment per class,
one after another. Each trial is seeded, so both arms must train identical models: the
table says whether their validation RMSE agree.

Before either arm, one class is trained once (one epoch, not timed in either arm): the
first search in a process pays for importing and starting what every later one reuses
(Tune's modules, the registering actor), and would otherwise be charged to whichever arm
runs first. ``--no-warmup`` leaves it out.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from benchmarks._local_ray import local_ray
from pumpfleet.settings import Settings
from pumpfleet.simulator import SimulationConfig, simulate
from pumpfleet.windows import WindowConfig


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.train_parallel", description=__doc__
    )
    parser.add_argument("--pumps", type=int, default=48)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--lr", type=float, nargs="+", default=[1e-2])
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--no-warmup", action="store_true", help="time the arms cold")
    args = parser.parse_args(argv)

    from pumpfleet.search_space import SearchSpace
    from ray_jobs.ingest import run_ingest
    from ray_jobs.train import run_train

    root = Settings().home / "benchmarks" / f"train-parallel-{int(time.time())}"
    settings = Settings(home=root)
    simulate(SimulationConfig(pumps=args.pumps, days=args.days, seed=0), str(settings.data_dir))
    with local_ray(args.cpus):
        snap = run_ingest(str(settings.data_dir), str(settings.features_dir), WindowConfig())
        classes = sorted(snap["windows"])
        space = SearchSpace(lr=args.lr, epochs=args.epochs)
        t_warmup = 0.0
        if not args.no_warmup:
            t = time.perf_counter()
            run_train(
                settings, snap["snapshot_id"], SearchSpace(lr=args.lr[:1], epochs=1), classes[:1]
            )
            t_warmup = time.perf_counter() - t
        load = {"parallel": os.getloadavg()[0]}
        t = time.perf_counter()
        parallel = run_train(settings, snap["snapshot_id"], space)
        t_parallel = time.perf_counter() - t
        load["sequential"] = os.getloadavg()[0]
        t = time.perf_counter()
        sequential: dict[str, Any] = {}
        for cls in classes:
            sequential |= run_train(settings, snap["snapshot_id"], space, [cls])["classes"]
        t_sequential = time.perf_counter() - t
    same = all(
        abs(parallel["classes"][c]["val_rmse"] - sequential[c]["val_rmse"]) < 1e-9 for c in classes
    )
    trials = len(classes) * space.trials_per_class
    rows = [
        ["arm", "classes", "trials", "wall s", "x sequential"],
        ["one class after another", str(len(classes)), str(trials), f"{t_sequential:.1f}", "1.00x"],
        [
            "classes in parallel",
            str(len(classes)),
            str(trials),
            f"{t_parallel:.1f}",
            f"{t_sequential / t_parallel:.2f}x",
        ],
    ]
    print(_table(rows))
    print(
        f"load average before: parallel {load['parallel']:.1f}, sequential {load['sequential']:.1f}"
    )
    print(
        f"warm-up (one class, one epoch, not in either arm): {t_warmup:.1f} s"
        if t_warmup
        else "no warm-up: the first arm pays the process's start-up"
    )
    print(f"same models in both arms (validation RMSE equal): {'yes' if same else 'NO'}")
    result = {
        "pumps": args.pumps,
        "days": args.days,
        "epochs": args.epochs,
        "lr": args.lr,
        "cpus": args.cpus,
        "trials": trials,
        "sequential_s": round(t_sequential, 2),
        "parallel_s": round(t_parallel, 2),
        "ratio": round(t_sequential / t_parallel, 3),
        "same_models": same,
        "warmup_s": round(t_warmup, 2),
        "load_before": load,
    }
    out = Path(root) / "result.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"result: {out}")
    print(
        f"ratio={result['ratio']:.2f} parallel_s={t_parallel:.1f} sequential_s={t_sequential:.1f}"
    )


if __name__ == "__main__":
    main()
