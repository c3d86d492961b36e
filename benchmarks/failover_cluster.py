"""Ray clusters of several nodes on this machine for benchmarks/failover.py: start one,
kill a worker node mid-run (every process of it, as when a VM or pod dies), and the
workspace each scenario runs in."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MB = 2**20
NODE = {"num_cpus": 1, "object_store_memory": 128 * MB}
# The ingest scenario's --quick (the tests): the GCS declares a silent node dead after 3
# missed health checks a second apart, not Ray's 5 three seconds apart (15 s of that
# scenario's recovery was that wait). What follows the detection (Ray Data's tasks run
# again) is Ray's own either way. The training scenario, with it, once lost the killed
# trial's first results (its result.json began at epoch 3) and gained nothing.
QUICK_DETECTION = {
    "health_check_period_ms": 1000,
    "health_check_timeout_ms": 2000,
    "health_check_failure_threshold": 3,
}


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
def local_cluster(workers: int = 2, quick: bool = False) -> Iterator[LocalCluster]:
    """A cluster of its own, on loopback, in a temp dir of its own (never the machine's
    default Ray, whose address file other tools read); shut down whatever happens.
    ``quick``: a lost node is noticed in seconds (:data:`QUICK_DETECTION`)."""
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
            head_node_args={
                **NODE,
                "num_cpus": 0,
                "include_dashboard": False,
                **({"_system_config": QUICK_DETECTION} if quick else {}),
            },
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
