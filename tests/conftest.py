"""Shared test setup: telemetry off, small fleets, a free loopback port, and packages
made unimportable on request (``PUMPFLEET_TEST_BLOCK_IMPORTS=ray,torch``) so a run can
prove the code it tests does without them."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from socketserver import BaseServer
from typing import Any

import pytest

BLOCK_IMPORTS = "PUMPFLEET_TEST_BLOCK_IMPORTS"


class BlockImports(importlib.abc.MetaPathFinder):
    """Makes the named top-level packages (and their submodules) import as if they were
    not installed."""

    def __init__(self, names: set[str]) -> None:
        self.names = frozenset(names)

    def find_spec(
        self, name: str, path: Sequence[str] | None = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if name.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"{name} is blocked by {BLOCK_IMPORTS}", name=name)
        return None


def block_imports(names: set[str]) -> None:
    """Install the blocker first on ``sys.meta_path``; a package already imported
    cannot be blocked any more, so that is an error."""
    loaded = sorted(m for m in sys.modules if m.partition(".")[0] in names)
    if loaded:
        raise RuntimeError(f"{BLOCK_IMPORTS}: already imported before the tests: {loaded}")
    sys.meta_path.insert(0, BlockImports(names))


_blocked = {n.strip() for n in os.environ.get(BLOCK_IMPORTS, "").split(",") if n.strip()}
if _blocked:
    block_imports(_blocked)

from pumpfleet import ports  # noqa: E402
from pumpfleet.ports import free_port  # noqa: E402, F401  (the tests import it from here)
from pumpfleet.settings import TELEMETRY_OFF, Settings  # noqa: E402

for _k, _v in TELEMETRY_OFF.items():
    os.environ.setdefault(_k, _v)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def serve_in_background(server: BaseServer) -> threading.Thread:
    """A test's own http.server ``server``, serving from a daemon thread (started). It
    looks for its ``shutdown()`` every 50 ms: at serve_forever's default, 0.5 s, every
    test that stopped one waited that long."""
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    return thread


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings on a fresh workspace under the test's temp folder."""
    return Settings(home=tmp_path / "ws")


@pytest.fixture(scope="session")
def ray_session() -> object:
    """One local Ray for the whole test session (integration and e2e: under ``make
    test``'s two pytest-xdist workers, all on one, :func:`pytest_xdist_make_scheduler`)."""
    import ray

    # Serve as `pumpfleet serve` runs it, with no load balancer to drain for
    # (serve_apps/run.py: LOCAL_SERVE_ENV), set before Ray starts its processes.
    from serve_apps.run import use_serve_env

    use_serve_env(local=True)
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        _node_ip_address="127.0.0.1",
    )
    yield ray
    ray.shutdown()


# Integration tests that bring their own servers or clusters and touch neither the
# session's Ray nor its Serve: they run beside the session's tests, each file (or test)
# a unit of its own. The serving failover starts Serve on a cluster of its own, in a
# process of its own: its HAProxy front door has its own folder (serve_apps.front_door)
# and ports (pumpfleet.ports, never the kernel's ephemeral range), so it runs beside
# the session's Serve.
ON_THEIR_OWN = (
    "tests/integration/test_board.py",
    "tests/integration/test_cluster_loop.py",
    "tests/integration/test_edge_agent.py",
    "tests/integration/test_edge_mqtt.py",
    "tests/integration/test_edge_rollout.py",
    "tests/integration/test_failover.py::test_serving_keeps_answering",
    "tests/integration/test_failover.py::test_training_trials",
    "tests/integration/test_failover.py::test_ingest_completes",
    "tests/integration/test_remote.py::test_entry_points",
    "tests/integration/test_webhooks.py",
)


def work_unit(nodeid: str) -> str:
    """The unit of work a test belongs to under ``make test``: a unit test's file, an
    integration test of :data:`ON_THEIR_OWN` on its own, else ``"ray"``: every test
    that uses the session's Ray or starts Serve, all on one worker, in order."""
    if nodeid.startswith("tests/unit/"):
        return nodeid.split("::", 1)[0]
    for prefix in ON_THEIR_OWN:
        if nodeid.startswith(prefix):
            return prefix
    return "ray"


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """``make test`` runs on two pytest-xdist workers. The tests that use the session's
    one local Ray or start Serve go to one worker, in collection order (a docs page's
    blocks run in turn, and no two Serve instances or their HAProxy front doors run at
    once); the integration tests that bring their own clusters and servers
    (:data:`ON_THEIR_OWN`) and then the unit tests (which never start Ray), file by
    file, go to whichever worker is free. Units are handed out in collection order (not
    largest first), so the session's tests start first and the ones on their own next.
    xdist's own ``--dist loadgroup`` would say so by marks, but it renames node ids in a
    way pytest 9 no longer reads."""
    from xdist.scheduler import LoadScopeScheduling

    class ByWorkUnit(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    config.option.loadscopereorder = False
    return ByWorkUnit(config, log)


# The edge agent's unit tests, which tests/unit/test_edge_ray_free.py runs again in an
# interpreter where Ray cannot be imported.
EDGE_TESTS = (
    "tests/unit/test_edge_agent.py",
    "tests/unit/test_edge_doors.py",
    "tests/unit/test_manifest.py",
    "tests/unit/test_window_rule.py",
    "tests/unit/test_scoring.py",
    "tests/unit/test_bundle.py",
    "tests/unit/test_edge_mqtt.py",
    "tests/unit/test_edge_trust.py",
    "tests/unit/test_edge_rollout.py",
    "tests/unit/test_edge_explain.py",
)
RAY_FREE_RUN = "tests/unit/test_edge_ray_free.py::test_edge_unit_tests_pass_with_ray_blocked"


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Where the Ray-blocked run of the edge unit tests is selected, it is the one run of
    them: it reports each test's outcome, and fails naming any that did not pass. Run
    on their own (``pytest tests/unit/test_edge_agent.py``), they run as usual. After
    ``-m`` and ``-k`` have deselected theirs (trylast), so ``-m "not slow"`` keeps them."""
    if not any(item.nodeid == RAY_FREE_RUN for item in items):
        return
    edge = [item for item in items if item.nodeid.split("::", 1)[0] in EDGE_TESTS]
    if edge:
        config.hook.pytest_deselected(items=edge)
        items[:] = [item for item in items if item not in edge]


class WorkerClock:
    """Under ``make test``'s two workers: each worker's busy seconds (setup, call and
    teardown of its tests) and when it finished, from the session's start, so the
    summary says which worker the run waited for."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.busy: dict[str, float] = defaultdict(float)
        self.done: dict[str, float] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        node: Any = getattr(report, "node", None)
        worker = getattr(getattr(node, "gateway", None), "id", None)
        if worker is None:
            return
        self.busy[worker] += report.duration
        self.done[worker] = time.monotonic() - self.start

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.busy:
            return
        terminalreporter.section("time per worker")
        for worker in sorted(self.busy):
            terminalreporter.write_line(
                f"{worker}: busy {self.busy[worker]:.0f} s, "
                f"last test done at {self.done[worker]:.0f} s"
            )


def worker_port_range(worker: int, workers: int) -> str:
    """The worker's share of the ports :func:`pumpfleet.ports.free_port` draws from, as
    ``PUMPFLEET_PORT_RANGE``: a port one worker's session holds for a server that binds
    it minutes later (Serve's front-door ports, fixed when its Ray starts) is never
    drawn by the other worker's servers. Once, the session's fallback proxy port was
    taken by the time Serve bound it, and the demo fixture's Serve could not start."""
    low, high = ports.draw_range()
    size = (high - low) // workers
    return f"{low + worker * size}-{low + (worker + 1) * size - 1}"


def pytest_configure(config: pytest.Config) -> None:
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        config.pluginmanager.register(WorkerClock(), "pumpfleet-worker-clock")
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None and ports.RANGE_VAR not in os.environ:
        # set before any fixture starts a server; subprocesses inherit it
        worker = int(workerinput["workerid"].removeprefix("gw"))
        os.environ[ports.RANGE_VAR] = worker_port_range(worker, workerinput["workercount"])
