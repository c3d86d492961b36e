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
import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pumpfleet.tables import format_table

MB = 2**20
NODE = {"num_cpus": 1, "object_store_memory": 128 * MB}


@dataclass
class LocalCluster:
    """A head and worker nodes, each a set of Ray processes on this machine."""

    cluster: Any
    temp: Path  # RAY_TMPDIR of every node: the sessions' logs and Tune's driver staging
    workers: list[Any] = field(default_factory=list)

    def add_worker(self) -> Any:
        node = self.cluster.add_node(**NODE)
        self.workers.append(node)
        return node

    def kill(self, node: Any, replace: bool = True) -> float:
        """SIGKILL every process of ``node``; returns when it happened (monotonic)."""
        import psutil
        from ray._private import ray_constants

        self.workers.remove(node)
        raylet = node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process
        killed = time.monotonic()
        # A machine that dies takes all its processes at once. cluster_utils ends Ray's
        # own (raylet, agents); the workers (trials, replicas, the node's Serve proxy,
        # Ray Data tasks) would notice seconds later and serve on meanwhile: kill them.
        for child in psutil.Process(raylet.pid).children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        self.cluster.remove_node(node, allow_graceful=False)
        if replace:
            self.add_worker()
        return killed

    def worker(self, node_id: str) -> Any:
        return next(n for n in self.workers if n.node_id == node_id)


@contextmanager
def local_cluster(workers: int = 2) -> Iterator[LocalCluster]:
    """A cluster of its own, on loopback, in a temp dir of its own (never the machine's
    default Ray, whose address file other tools read); shut down whatever happens."""
    import ray
    import ray._private.ray_constants as ray_constants
    from ray.cluster_utils import Cluster

    from serve_apps.run import use_serve_env

    temp = tempfile.mkdtemp(prefix="pff", dir="/tmp")  # short: socket paths <= 107 bytes
    saved = {k: os.environ.get(k) for k in ("RAY_TMPDIR", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")}
    os.environ["RAY_TMPDIR"] = temp
    # Ray resolves "this machine" to loopback instead of the first interface's address,
    # for every node and the driver alike (nodes inherit the environment).
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    use_serve_env()  # Serve as `pumpfleet serve` runs it, before any node starts
    cluster = None
    try:
        cluster = Cluster(
            initialize_head=True,
            head_node_args={**NODE, "num_cpus": 0, "include_dashboard": False},
        )
        local = LocalCluster(cluster, Path(temp))
        for _ in range(workers):
            local.add_worker()
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        yield local
    finally:
        if ray.is_initialized():
            ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(temp, ignore_errors=True)


def actors(class_part: str) -> list[dict[str, Any]]:
    """Live actors whose class name contains ``class_part``: node id and pid (from the
    GCS actor table; no dashboard needed)."""
    from ray._private import state

    return [
        {"node_id": a["Address"]["NodeID"], "pid": a["Pid"], "name": a["Name"]}
        for a in state.actors().values()
        if class_part in a["ActorClassName"] and a["State"] == "ALIVE"
    ]


def disturbed(
    lc: LocalCluster,
    work: Callable[[], Any],
    victim: Callable[[], Any],
    recovered: Callable[[], bool] | None = None,
    stop: threading.Event | None = None,
    linger: float = 0.0,
) -> tuple[Any, dict[str, float]]:
    """Run ``work`` in a thread while this (the main) thread kills the node ``victim()``
    names as soon as it names one, adds a replacement, and times until ``recovered()``.
    With ``stop``, it is set ``linger`` seconds after recovery. Ray adds nodes from the
    main thread only (signal handlers)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["out"] = work()
        except BaseException as e:  # re-raised in the main thread below
            box["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    marks: dict[str, float] = {"started": time.monotonic()}
    thread.start()
    while thread.is_alive():
        now = time.monotonic()
        if "killed" not in marks:
            node = victim()
            if node is not None:
                marks["killed"] = lc.kill(node)
        elif "recovered" not in marks and recovered is not None and recovered():
            marks["recovered"] = now
        if stop is not None and now > marks.get("recovered", float("inf")) + linger:
            stop.set()
        time.sleep(0.05)
    thread.join()
    marks["ended"] = time.monotonic()
    if "error" in box:
        raise box["error"]
    return box["out"], marks


# --- training -----------------------------------------------------------------------


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


def _since(marks: dict[str, float], mark: str) -> float | None:
    return marks[mark] - marks["killed"] if mark in marks and "killed" in marks else None


@contextmanager
def _workspace(fleet: Any) -> Iterator[Any]:
    from pumpfleet.settings import Settings
    from pumpfleet.simulator import simulate

    home = Path(tempfile.mkdtemp(prefix="pumpfleet-failover-"))
    try:
        settings = Settings(home=home)
        simulate(fleet, str(settings.data_dir))
        yield settings
    finally:
        shutil.rmtree(home, ignore_errors=True)


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
    with _workspace(fleet) as settings, local_cluster() as lc:
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


# --- serving ------------------------------------------------------------------------

CLASS = "esp"
WINDOW = 24
RETRY_AFTER_S = 0.2


def _register_model(settings: Any) -> Any:
    """An untrained CNN registered as the esp champion (failover does not need a good
    model); its feature spec."""
    import torch

    from pumpfleet import onnx_io
    from pumpfleet.features import FeatureSpec
    from pumpfleet.models import ModelConfig, build_model
    from pumpfleet.registry import CHAMPION, Registry, model_name
    from pumpfleet.schema import CLASS_CHANNELS

    torch.manual_seed(0)
    channels = list(CLASS_CHANNELS[CLASS])
    spec = FeatureSpec(
        pump_class=CLASS, channels=channels, window=WINDOW, stride=4, interval_seconds=3600,
        rul_cap_hours=168, horizon_hours=48, mean=[50.0] * len(channels),
        std=[10.0] * len(channels),
    )  # fmt: skip
    model = build_model(spec.n_channels, ModelConfig()).eval()
    reg = Registry(settings.tracking_uri, settings.artifact_root)
    run = reg.start_run("pumpfleet-bench", "failover")
    onnx = onnx_io.to_onnx(model, WINDOW, spec.n_channels)
    uri = reg.log_model(run, onnx, spec, model.state_dict(), ModelConfig().model_dump())
    reg.end_run(run)
    name = model_name(CLASS)
    reg.set_alias(name, CHAMPION, reg.register(uri, name))
    return spec


def _raw_requests(port: int, key: str, spec: Any, n: int = 64) -> list[bytes]:
    """Single-window score requests, each serialised once as a whole HTTP/1.1 request."""
    rng = np.random.default_rng(1)
    out = []
    for i in range(n):
        body = json.dumps(
            {
                "pump_id": f"{CLASS}-{i:05d}",
                "pump_class": CLASS,
                "readings": {c: list(rng.normal(50, 10, WINDOW).round(3)) for c in spec.inputs},
            }
        ).encode()
        head = (
            f"POST /v1/score HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n"
            f"content-type: application/json\r\nx-api-key: {key}\r\n"
            f"content-length: {len(body)}\r\n\r\n"
        )
        out.append(head.encode() + body)
    return out


async def _status(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes) -> str:
    """Sends one request; its status code, with the body if it is not 200."""
    writer.write(raw)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.lower().split(b"\r\n")
    length = next((int(x[15:]) for x in lines if x.startswith(b"content-length:")), 0)
    body = await reader.readexactly(length)
    status = head[9:12].decode()
    return status if status == "200" else f"{status} {body[:200].decode(errors='replace')}"


def load(port: int, raws: list[bytes], clients: int, stop: threading.Event) -> list[Any]:
    """``clients`` clients on kept-alive connections, scoring until ``stop``; every
    request as (start, end, first outcome, outcome after one retry), an outcome being
    "200" or what went wrong. A failed request is retried once on a new connection,
    after ``RETRY_AFTER_S``, as a load balancer or client with a retry policy does."""
    done: list[tuple[float, float, str, str]] = []

    async def client(k: int) -> None:
        conn: Any = None
        i = k
        while not stop.is_set():
            t = time.monotonic()
            outcomes: list[str] = []
            for attempt in range(2):
                if attempt:
                    await asyncio.sleep(RETRY_AFTER_S)
                try:
                    if conn is None:
                        conn = await asyncio.open_connection("127.0.0.1", port)
                    outcome = await asyncio.wait_for(_status(*conn, raws[i % len(raws)]), 30)
                except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as e:
                    outcome = type(e).__name__
                    if conn is not None:
                        conn[1].close()
                    conn = None
                outcomes.append(outcome)
                if outcome == "200":
                    break
            done.append((t, time.monotonic(), outcomes[0], outcomes[-1]))
            i += clients
        if conn is not None:
            conn[1].close()

    async def main() -> None:
        await asyncio.gather(*(client(k) for k in range(clients)))

    asyncio.run(main())
    return done


def _window(done: list[Any], start: float, end: float) -> dict[str, Any]:
    """Requests in flight at some time in [start, end): how many, failed (at the first
    attempt, as a client without retries sees it, and after one retry), per second and
    p99 ms of those that succeeded."""
    sel = [r for r in done if r[0] < end and r[1] >= start]
    ok = [r[1] - r[0] for r in sel if r[3] == "200"]
    failed = [r for r in sel if r[2] != "200"]
    kinds: dict[str, int] = {}
    for r in failed:
        kind = r[2].split(" ", 1)[0]
        kinds[kind] = kinds.get(kind, 0) + 1
    seconds = max(1e-9, (max((r[1] for r in sel), default=start) - start))
    return {
        "requests": len(sel),
        "errors": len(failed),
        "error_rate": len(failed) / len(sel) if sel else 0.0,
        "errors_after_retry": len(sel) - len(ok),
        "error_kinds": kinds,
        "rps": len(ok) / seconds,
        "p99_ms": float(np.percentile(np.array(ok) * 1000, 99)) if ok else None,
        # when each failed request started, from the start of the window, and why
        "failed": [(round(r[0] - start, 2), r[2]) for r in failed][:50],
    }


def serving(quick: bool) -> dict[str, Any]:
    """The scoring app with two replicas on two workers under single-window load; kill
    the node of one replica."""
    import httpx
    from ray import serve

    from pumpfleet.simulator import SimulationConfig
    from pumpfleet_cli.demo import free_port
    from serve_apps import run as serve_run
    from serve_apps.security import Secrets, digest

    seconds, clients = (6.0, 4) if quick else (20.0, 8)
    key = secrets.token_urlsafe(24)
    with _workspace(SimulationConfig(pumps=1, days=1)) as settings, local_cluster() as lc:
        spec = _register_model(settings)
        port = free_port()
        keys = Secrets(api_keys=(digest(key),), admin_tokens=(digest(secrets.token_hex(8)),))
        url = serve_run.start(settings, port, 0.0, secrets=keys, num_replicas=2, staging=False)
        raws = _raw_requests(port, key, spec)

        def replicas() -> list[dict[str, Any]]:
            return [r for r in actors("ServeReplica") if f"{serve_run.APP_NAME}#" in r["name"]]

        def healthy() -> bool:
            app = serve.status().applications.get(serve_run.APP_NAME)
            states = app.deployments["PumpScorer"].replica_states if app else {}
            on = {r["node_id"] for r in replicas()}
            return states == {"RUNNING": 2} and len(replicas()) == 2 and not on & gone

        gone: set[str] = set()
        deadline = time.monotonic() + 120
        while not healthy() or httpx.get(f"{url}/readyz").status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError("the scoring app did not come up in 120 s")
            time.sleep(0.5)
        nodes = sorted(r["node_id"] for r in replicas())
        spread = len(set(nodes)) == 2

        stop = threading.Event()
        timer = threading.Timer(seconds, stop.set)
        timer.start()
        baseline = load(port, raws, clients, stop)
        base = _window(baseline, baseline[0][0], float("inf"))

        stop = threading.Event()
        started = time.monotonic()

        def victim() -> Any:
            if time.monotonic() - started < seconds / 3:
                return None
            node = lc.worker(replicas()[0]["node_id"])
            gone.add(node.node_id)
            return node

        done, marks = disturbed(
            lc, lambda: load(port, raws, clients, stop), victim, healthy, stop, linger=seconds
        )
        after_nodes = sorted(r["node_id"] for r in replicas())
        # No serve.shutdown(): with a node gone, its controller waits 30 s for replicas
        # that no longer exist; the cluster goes down whole right after.
    killed, back = marks.get("killed", float("inf")), marks.get("recovered", float("inf"))
    return {
        "scenario": "serving",
        "clients": clients,
        "replica_nodes": nodes,
        "replicas_on_two_nodes": spread,
        "replica_nodes_after": after_nodes,
        "killed_node_had_replica": bool(gone & set(nodes)),
        "baseline": base,
        # Before: finished before the kill; during: in flight at some time from the kill
        # to two healthy replicas again; after: started after that.
        "before": _window([r for r in done if r[1] < killed], marks["started"], killed),
        "during": _window(done, killed, back),
        "after": _window([r for r in done if r[0] >= back], back, float("inf")),
        "recovery_s": _since(marks, "recovered"),  # node killed -> 2 healthy replicas
        "baseline_s": seconds,
        "failure_s": marks["ended"] - marks["started"],
    }


# --- the report ---------------------------------------------------------------------

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
