"""The edge agent as a process, killed with SIGKILL at random points while it scores and
uploads, twenty times: after the restarts every prediction is in the cloud exactly once.

No Ray: the agent runs in subprocesses against a real HTTP server (in this process)
whose route calls the real storage function."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.store import Store
from tests.unit.edge_support import (
    Cloud,
    EdgeWorkspace,
    agent_config,
    shared_workspace,
    write_readings,
)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
W = 12
KILLS = 20


@pytest.fixture
def ws(tmp_path_factory: pytest.TempPathFactory) -> EdgeWorkspace:
    return shared_workspace(tmp_path_factory.getbasetemp(), versions=1)


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[Cloud]:
    c = Cloud(tmp_path / "cloud")
    yield c
    c.close()


def start(config: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "edge_agent.cli", "run", "--config", str(config), *extra],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def scored(state_dir: Path) -> int:
    """Windows the agent has stored so far (0 before its store exists)."""
    if not (state_dir / "store.db").exists():
        return 0
    store = Store(state_dir / "store.db")
    try:
        return int(store.counters()["scored"])
    finally:
        store.close()


def test_sigkill_twenty_times_every_prediction_arrives_exactly_once(
    ws: EdgeWorkspace, cloud: Cloud, tmp_path: Path
) -> None:
    cfg = agent_config(ws, tmp_path / "agent", cloud.url, upload_batch=5, poll_seconds=0.01)
    config = tmp_path / "agent.json"
    config.write_text(cfg.model_dump_json())
    rng = random.Random(6)
    written: list[tuple[str, int]] = []
    stop = threading.Event()

    def controller() -> None:
        """A pump controller writing a file of 3 pumps x 4 readings every 30 ms."""
        seq = 0
        while not stop.is_set():
            written.extend(write_readings(cfg.spool, f"{seq:06d}", ["p1", "p2", "p3"], seq * 4, 4))
            seq += 1
            stop.wait(0.03)

    feeder = threading.Thread(target=controller)
    feeder.start()
    busy_at_kill = 0
    started = time.monotonic()
    try:
        for _ in range(KILLS):
            before = scored(cfg.state_dir)
            proc = start(config)
            # Kill it at work, whatever the machine's load makes of its start-up: once it
            # has scored something in this life, a little later.
            deadline = time.monotonic() + 60
            while scored(cfg.state_dir) <= before and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.2))
            proc.kill()
            proc.wait()
            store = Store(cfg.state_dir / "store.db")
            busy_at_kill += store.buffered()["rows"] > 0
            store.close()
    finally:
        stop.set()
        feeder.join()
    proc = start(config, "--exit-when-idle")
    assert proc.wait(timeout=300) == 0  # the backlog of the whole killing phase
    killing = time.monotonic() - started

    by_pump: dict[str, list[int]] = {}
    for pump, t in written:
        by_pump.setdefault(pump, []).append(t)
    expected = {f"rig-7:{p}:{t * 10**9}" for p, ts in by_pump.items() for t in sorted(ts)[W - 1 :]}
    got = Counter(cloud.rows().column("request_id").to_pylist())
    duplicated = {k: n for k, n in got.items() if n > 1}
    assert not duplicated, f"{len(duplicated)} predictions stored more than once"
    assert set(got) == expected, (len(expected - set(got)), len(set(got) - expected))
    store = Store(cfg.state_dir / "store.db")
    c = store.counters()
    assert store.buffered()["rows"] == 0 and c["scored"] == c["uploaded"] == len(expected)
    # The kills landed while work was in hand, not only between jobs.
    assert busy_at_kill >= KILLS // 2, busy_at_kill
    print(
        json.dumps(
            {
                "kills": KILLS,
                "busy_at_kill": busy_at_kill,
                "predictions": len(expected),
                "batches_resent_as_duplicates": c["duplicates_acknowledged"],
                "seconds": round(killing, 1),
            }
        )
    )
