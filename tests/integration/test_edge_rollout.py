"""A staged rollout across a fleet of 24 agent processes of two classes, each uploading
and pulling its signed assignment and bundles with its own device token from the scoring
service's real routes and doors (its app on a loopback socket, tests/serve_inproc.py): a
rollout whose canaries fail their self-test halts by itself with the rest of the fleet
untouched, and a good rollout of the other class goes wave by wave to every device.

No Ray: the agents are `pumpfleet-edge run` processes; the service's app runs in this
process under uvicorn."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge_export.export import signing_key_path
from pumpfleet import bundle, devices, fleet_devices, rollout
from serve_apps.security import digest
from tests.serve_inproc import InProcessService
from tests.serve_inproc import config as service_config
from tests.unit.edge_support import (
    EdgeWorkspace,
    agent_config,
    bundle_with,
    shared_workspace,
    wrong_golden,
)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PER_CLASS = 12
KEY = "scoring-key-0123456789"


@pytest.fixture
def ws(tmp_path_factory: pytest.TempPathFactory) -> EdgeWorkspace:
    return shared_workspace(tmp_path_factory.getbasetemp())


def wait_for(what: Callable[[], Any], timeout: float, why: Callable[[], str]) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = what()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out: {why()}")
        time.sleep(0.25)


def test_a_failing_canary_wave_halts_alone_and_a_good_rollout_completes(
    ws: EdgeWorkspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "cloud"
    home.mkdir()
    service_cfg = service_config(
        home,
        api_key_sha256=[digest(KEY)],
        workspace=str(home),
        signing_key=str(signing_key_path(ws.settings)),
    )
    log_root = Path(service_cfg.predictions_dir)
    answers: list[dict[str, Any]] = []  # every assignment the route answered
    pull = fleet_devices.pull

    def recorded(*args: Any) -> dict[str, Any]:
        answers.append(pull(*args))
        return answers[-1]

    monkeypatch.setattr(fleet_devices, "pull", recorded)
    tokens = {
        f"{cls}-{i:02d}": devices.issue(str(home / devices.FILE), f"{cls}-{i:02d}")
        for cls in ("esp", "rod")
        for i in range(PER_CLASS)
    }
    cloud = InProcessService(service_cfg)
    release = bundle.read_bundle(ws.bundles["2"], ws.public_key).manifest.release or 0
    rod_v1 = bundle_with(ws, tmp_path, "1", meta={"pump_class": "rod"}, name="rod-v1")
    rod_v2 = bundle_with(
        ws, tmp_path, "2", meta={"pump_class": "rod", "release": release + 1}, name="rod-v2"
    )
    bad_esp_v3 = wrong_golden(ws, tmp_path, version="3")  # its golden outputs are off
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for cls, first in (("esp", ws.bundles["1"]), ("rod", rod_v1)):
            for i in range(PER_CLASS):
                device = f"{cls}-{i:02d}"
                cfg = agent_config(
                    ws,
                    tmp_path / "agents" / device,
                    cloud.url,
                    device_id=device,
                    api_key=tokens[device],
                    site=f"site-{i % 3}",
                    initial_bundle=first,
                    assignments=True,
                    assignment_poll_seconds=0.5,
                    heartbeat_seconds=0.5,
                    poll_seconds=0.2,
                )
                config = tmp_path / "agents" / f"{device}.json"
                config.parent.mkdir(parents=True, exist_ok=True)
                config.write_text(cfg.model_dump_json())
                procs[device] = subprocess.Popen(
                    [sys.executable, "-m", "edge_agent.cli", "run", "--config", str(config)],
                    cwd=ROOT,
                    stdout=subprocess.DEVNULL,
                    stderr=(tmp_path / "agents" / f"{device}.log").open("w"),
                )

        def reports() -> dict[str, rollout.Report]:
            return fleet_devices.reports(log_root)

        wait_for(
            lambda: len([r for r in reports().values() if r.bundle == "v1"]) == 2 * PER_CLASS,
            120,
            lambda: f"{len(reports())} devices reported",
        )
        keys = [ws.public_key]
        started = time.monotonic()

        def plan(rid: str, cls: str, target: Path, previous: Path) -> rollout.Plan:
            return rollout.Plan(
                rollout_id=rid,
                pump_class=cls,
                target=fleet_devices.target(target, keys),
                previous=fleet_devices.target(previous, keys),
                canary_percent=10,
                waves=[50, 100],
                soak_seconds=1.0,
            )

        # esp: v3 fails its self-test on the canaries; the rollout halts by itself.
        fleet_devices.start(
            home, log_root, plan("esp-v3", "esp", bad_esp_v3, ws.bundles["1"]), time.time()
        )
        book = fleet_devices.load(home)
        canaries = sorted(book.rollouts["esp"].state.members)
        assert len(canaries) == 2  # 10 % of 12, rounded up

        def esp_status() -> str | None:
            fleet_devices.tick(home, log_root, time.time())
            state = fleet_devices.load(home).rollouts["esp"].state
            return state.reason if state.status == "halted" else None

        reason = wait_for(esp_status, 90, lambda: "esp rollout still running")
        # It halts at the first failure: the other canary may not have tried v3 yet.
        assert re.fullmatch(
            r"self-test failed on [12] of 2 devices reached \(esp-\d\d: golden outputs "
            r"differ by 2\.50e-01 \(limit 1\.0e-05\)\)",
            reason,
        )
        state = fleet_devices.load(home).rollouts["esp"].state
        assert state.wave == 0 and set(state.members) == set(canaries)
        # The canaries kept v1; no other device was offered v3 or tried it.
        now = reports()
        assert {d: r.bundle for d, r in now.items()} == dict.fromkeys(now, "v1")
        tried = {d for d, r in now.items() if r.self_test and r.self_test["bundle"] == "v3"}
        assert tried and tried <= set(canaries)
        offered = {
            a["assignment"]["signed"]["device_id"]
            for a in answers
            if a["assignment"]["signed"]["bundle"] == "v3"
        }
        assert tried <= offered <= set(canaries)

        # rod: v2 is good; the rollout widens wave by wave to all 12 devices.
        fleet_devices.start(home, log_root, plan("rod-v2", "rod", rod_v2, rod_v1), time.time())

        def rod_done() -> bool:
            fleet_devices.tick(home, log_root, time.time())
            return fleet_devices.load(home).rollouts["rod"].state.status == "completed"

        wait_for(rod_done, 120, lambda: str(fleet_devices.load(home).rollouts["rod"].state.events))
        events = [e["what"] for e in fleet_devices.load(home).rollouts["rod"].state.events]
        assert events[1:] == [
            "wave 1: 6 of 12 devices",
            "wave 2: 12 of 12 devices",
            "completed: 12 devices run v2",
        ]
        now = reports()
        assert {d: r.bundle for d, r in now.items() if d.startswith("rod")} == {
            f"rod-{i:02d}": "v2" for i in range(PER_CLASS)
        }
        assert {r.bundle for d, r in now.items() if d.startswith("esp")} == {"v1"}
        seen = httpx.get(f"{cloud.url}/v1/devices", headers={"x-api-key": KEY}, timeout=30)
        assert seen.status_code == 200, seen.text
        rows = seen.json()["devices"]
        view = {
            r["device_id"]: (r["pump_class"], r["bundle"], r["rollout"]["device"]) for r in rows
        }
        assert view[canaries[0]] == ("esp", "v1", "waiting")
        assert sum(1 for v in view.values() if v == ("esp", "v1", "not yet")) == PER_CLASS - 2
        assert sum(1 for v in view.values() if v == ("rod", "v2", "on target")) == PER_CLASS
        took = time.monotonic() - started
    finally:
        for p in procs.values():
            p.send_signal(signal.SIGTERM)
        codes = {d: p.wait(timeout=60) for d, p in procs.items()}
        cloud.close()
    assert set(codes.values()) == {0}
    print(json.dumps({"agents": len(procs), "seconds_from_first_rollout": round(took, 1)}))
