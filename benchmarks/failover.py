"""Node failures on a Ray cluster of several nodes on this machine (``ray.cluster_utils``):
a worker node is killed (SIGKILL to all its processes, as when a VM or pod dies) while

- **training**: Ray Tune trials run on it → they restart from their last checkpoint on
  another node and the search ends with the same best validation metric;
- **serving**: it holds one of the scoring app's two replicas while clients keep
  scoring single windows → requests keep succeeding and Serve brings the replica back;
- **ingest**: Ray Data is mid-shuffle on it → the job completes and its counts reconcile.

Each scenario runs undisturbed first (the baseline, after an untimed warm-up run unless
``--quick``), then again on the same input with the node killed, in the same run on a
fresh cluster: a head with no CPUs (the driver, GCS, Serve's controller) and two 1-CPU
workers. A replacement worker joins right after the kill, as KubeRay replaces a lost
worker pod. Ray's own failure detection is left at its defaults (a node is declared dead
after about 15 s of missed health checks).

    python -m benchmarks.failover [--scenario all|training|serving|ingest] [--quick] [--json]

Timings share 2 cores with everything else on the machine: read the ratios.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.failover_cluster import (
    LocalCluster,
    _since,
    _workspace,
    actors,
    disturbed,
    local_cluster,
)
from benchmarks.failover_serving import serving
from pumpfleet.tables import format_table


def _trial_results(experiment: Path) -> dict[str, list[tuple[int, int]]]:
    """Every trial's reported (epoch, pid), in order, from its result.json."""
    out = {}
    for result in experiment.glob("*/result.json"):
        lines = [json.loads(line) for line in result.read_text().splitlines() if line]
        out[result.parent.name] = [(int(r["epoch"]), int(r["pid"])) for r in lines]
    return out


def _staged_pids(lc: LocalCluster, experiment: str) -> dict[str, int]:
    """The process of each trial that has reported, from the results Tune keeps on the
    driver (in the session folder; they reach the experiment folder later)."""
    staged = f"ray/session_*/artifacts/*/{Path(experiment).name}/driver_artifacts/*/result.json"
    out = {}
    for result in lc.temp.glob(staged):
        first = result.read_text().split("\n", 1)[0]
        if first.strip():
            out[result.parent.name] = int(json.loads(first)["pid"])
    return out


def training(quick: bool) -> dict[str, Any]:
    """Tune two trials per class on two workers; kill the node of a trial once it has
    checkpointed two epochs."""
    from pumpfleet.search_space import Asha, SearchSpace
    from pumpfleet.simulator import SimulationConfig
    from pumpfleet.training_run import LATEST
    from pumpfleet.windows import WindowConfig
    from ray_jobs.ingest import run_ingest
    from ray_jobs.train import run_train

    epochs = 10
    # No early stopping (grace = all epochs): which trials ASHA stops depends on the
    # order results arrive in, which a failure changes; here only the failure may.
    space = SearchSpace(
        lr=[3e-3, 1e-2], batch_size=[8], epochs=epochs, asha=Asha(grace_period=epochs)
    )
    classes = ["esp"] if quick else ["esp", "rod"]
    with _workspace(SimulationConfig(pumps=24, days=30, seed=7)) as settings, local_cluster() as lc:
        run_ingest(str(settings.data_dir), str(settings.features_dir), WindowConfig(stride=8))
        if not quick:  # first-use costs (imports, ONNX export, MLflow) out of the baseline
            run_train(settings, "latest", SearchSpace(lr=[1e-2], epochs=1), classes[:1])
        t = time.monotonic()
        base = run_train(settings, "latest", space, classes)
        base_s = time.monotonic() - t
        base_path = json.loads((settings.tune_dir / LATEST).read_text())["path"]
        hit: dict[str, Any] = {}

        def experiment() -> str | None:
            path = str(json.loads((settings.tune_dir / LATEST).read_text())["path"])
            return path if path != base_path else None

        def victim() -> Any:
            path = experiment()
            if path is None:
                return None
            on = {a["pid"]: a["node_id"] for a in actors("")}
            for trial, pid in _staged_pids(lc, path).items():
                # Checkpoints reach storage as they are reported: count them.
                done = len(list(Path(path, trial).glob("checkpoint_*")))
                if 2 <= done <= epochs - 3 and pid in on:
                    hit.update(trial=trial, epoch=done, pid=pid, path=path)
                    return lc.worker(on[pid])
            return None

        def resumed() -> bool:  # the restored trial has checkpointed a new epoch
            done = len(list(Path(hit["path"], hit["trial"]).glob("checkpoint_*")))
            return done > hit["epoch"]

        failed, marks = disturbed(
            lc, lambda: run_train(settings, "latest", space, classes), victim, resumed
        )
        seen = _trial_results(Path(hit["path"]))[hit["trial"]] if hit else []
    if not hit:
        raise RuntimeError("no trial was running on a worker after its second checkpoint")
    resumed_at = [e for e, pid in seen if pid != hit["pid"]]
    return {
        "scenario": "training",
        "baseline_s": base_s,
        "failure_s": marks["ended"] - marks["started"],
        "killed_after_epoch": hit["epoch"],
        "trial_epochs": [e for e, _ in seen],
        # the first epoch the restored trial ran (1 would mean it started from scratch)
        "resumed_at_epoch": resumed_at[0] if resumed_at else None,
        # node killed -> the restored trial's first new checkpoint
        "recovery_s": _since(marks, "recovered"),
        "best": {c: base["classes"][c]["val_metric"] for c in classes},
        "best_after_failure": {c: failed["classes"][c]["val_metric"] for c in classes},
        "failed_trials": failed["failed_trials"],
        "trials": failed["trials"],
    }


# --- ingest -------------------------------------------------------------------------

COUNTS = ("rows_in", "rows_valid", "rows_quarantined", "quarantine_reasons", "pumps", "windows")


def ingest(quick: bool) -> dict[str, Any]:
    """Ingest a fleet with injected faults; kill a worker while Ray Data groups and
    validates the readings."""
    from pumpfleet.faults import FaultSpec
    from pumpfleet.simulator import SimulationConfig
    from pumpfleet.windows import WindowConfig
    from ray_jobs.ingest import run_ingest

    faults = [FaultSpec(kind="duplicate", rate=0.02), FaultSpec(kind="spike", rate=0.01)]
    fleet = SimulationConfig(pumps=48 if quick else 200, days=60, seed=11, faults=faults)
    cfg = WindowConfig(stride=4)
    # --quick: the lost node noticed in seconds (failover_cluster.QUICK_DETECTION)
    with _workspace(fleet) as settings, local_cluster(quick=quick) as lc:
        src = str(settings.data_dir)
        stages: dict[str, float] = {}
        if not quick:  # the workers' first imports out of the baseline
            run_ingest(src, str(settings.home / "features-warmup"), cfg)
        t = time.monotonic()
        base = run_ingest(src, str(settings.home / "features-baseline"), cfg, stages)
        base_s = time.monotonic() - t
        # Into the grouping and validation of the readings (the stage after the scan,
        # a shuffle: tasks on every worker, blocks in every node's object store).
        delay = min(1.0, 0.3 * stages["validate"])
        stages_f: dict[str, float] = {}
        scanned: list[float] = []

        def victim() -> Any:
            if "scan" in stages_f and not scanned:
                scanned.append(time.monotonic())
            return lc.workers[0] if scanned and time.monotonic() - scanned[0] > delay else None

        failed, marks = disturbed(
            lc,
            lambda: run_ingest(src, str(settings.home / "features-failure"), cfg, stages_f),
            victim,
        )
    killed_at = marks["killed"] - marks["started"] if "killed" in marks else None
    elapsed, stage = 0.0, None
    for name, seconds in stages_f.items():  # the stage the kill fell in
        elapsed += seconds
        if killed_at is not None and elapsed >= killed_at:
            stage = name
            break
    return {
        "scenario": "ingest",
        "baseline_s": base_s,
        "failure_s": marks["ended"] - marks["started"],
        "killed_at_s": killed_at,
        "killed_in_stage": stage,  # None: the job was over
        "stages": stages,
        "stages_with_failure": stages_f,
        "recovery_s": _since(marks, "ended"),  # node killed -> job done
        "counts": {k: base[k] for k in COUNTS},
        "counts_after_failure": {k: failed[k] for k in COUNTS},
        "snapshot_ids": [base["snapshot_id"], failed["snapshot_id"]],
    }


SCENARIOS: dict[str, Callable[[bool], dict[str, Any]]] = {
    "training": training,
    "serving": serving,
    "ingest": ingest,
}


def _fmt(v: float | None, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def rows(results: list[dict[str, Any]]) -> list[list[str]]:
    out = []
    for r in results:
        rec = _fmt(r.get("recovery_s"))
        if r["scenario"] == "training":
            base = ", ".join(f"{c} {v:.3f}" for c, v in r["best"].items())
            fail = ", ".join(f"{c} {v:.3f}" for c, v in r["best_after_failure"].items())
            quality = f"best val rmse {base}"
            after = f"{fail}; resumed at epoch {r['resumed_at_epoch']}"
            errors = ["-", "-"]
            wall = [_fmt(r["baseline_s"]), _fmt(r["failure_s"])]
        elif r["scenario"] == "ingest":
            c, f = r["counts"], r["counts_after_failure"]
            quality = f"{c['rows_in']:,} in = {c['rows_valid']:,} + {c['rows_quarantined']:,} q"
            after = f"{f['rows_in']:,} = {f['rows_valid']:,} + {f['rows_quarantined']:,}"
            after += ", same" if c == f else ", DIFFERENT"
            errors = ["-", "-"]
            wall = [_fmt(r["baseline_s"]), _fmt(r["failure_s"])]
        else:
            b, d, a = r["baseline"], r["during"], r["after"]
            quality = f"{b['rps']:.0f} req/s, p99 {_fmt(b['p99_ms'], '.0f')} ms"
            after = f"{d['rps']:.0f} req/s, p99 {_fmt(d['p99_ms'], '.0f')} ms (failover)"
            errors = [
                f"{d['errors']}/{d['requests']} ({100 * d['error_rate']:.2f}%), "
                f"{d['errors_after_retry']} after a retry",
                f"{a['errors']}/{a['requests']} ({100 * a['error_rate']:.2f}%)",
            ]
            wall = [_fmt(r["baseline_s"]), _fmt(r["failure_s"])]
        ratio = f"{r['failure_s'] / r['baseline_s']:.2f}x"
        out.append([r["scenario"], *wall, ratio, quality, after, *errors, rec])
    return out


HEADERS = [
    "scenario", "baseline s", "with failure s", "x", "baseline result", "with failure",
    "errors during failover", "errors after", "recovery s",
]  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.failover", description=__doc__)
    parser.add_argument("--scenario", choices=["all", *SCENARIOS], default="all")
    parser.add_argument("--quick", action="store_true", help="smaller fleets and load")
    parser.add_argument("--json", action="store_true", help="end with the results as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    # A stopped run shuts its cluster down (the finally blocks run on SystemExit).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    chosen = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    results = [SCENARIOS[name](args.quick) for name in chosen]
    load_avg = os.getloadavg()
    print()
    print(format_table(HEADERS, rows(results)))
    print(f"load average at the end: {load_avg[0]:.2f} {load_avg[1]:.2f} {load_avg[2]:.2f}")
    if args.json:
        print(json.dumps({"results": results, "load_average": load_avg}))


if __name__ == "__main__":
    main()
