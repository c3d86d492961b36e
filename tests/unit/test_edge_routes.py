"""The edge fleet's routes of the scoring service (issue 21), through its real app and
doors on a loopback socket (no Ray): a device pulls its own signed assignment with its
own token and fetches the bundle it names by sha256; operators see the devices."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge_agent.agent import Agent
from edge_export.export import signing_key_path
from pumpfleet import devices, fleet_devices
from pumpfleet.rollout import Plan
from serve_apps import doors
from serve_apps.security import digest
from tests.serve_inproc import InProcessService, config
from tests.unit.edge_support import EdgeWorkspace, agent_config, shared_workspace

KEY = "scoring-key-0123456789"


@pytest.fixture
def ws(tmp_path_factory: pytest.TempPathFactory) -> EdgeWorkspace:
    return shared_workspace(tmp_path_factory.getbasetemp())


@pytest.fixture
def cloud(ws: EdgeWorkspace, tmp_path: Path) -> Iterator[InProcessService]:
    home = tmp_path / "cloud"
    home.mkdir()
    cfg = config(
        home,
        api_key_sha256=[digest(KEY)],
        workspace=str(home),
        signing_key=str(signing_key_path(ws.settings)),
    )
    service = InProcessService(cfg)
    yield service
    service.close()


def run_until_idle(agent: Agent) -> None:
    agent.run(threading.Event(), exit_when_idle=True)


def test_a_device_pulls_its_own_assignment_and_fetches_its_bundle_by_sha256(
    ws: EdgeWorkspace, cloud: InProcessService, tmp_path: Path
) -> None:
    home = Path(cloud.scorer.config.workspace_dir())
    log_root = Path(cloud.scorer.config.predictions_dir)
    tokens = {d: devices.issue(str(log_root.parent / devices.FILE), d) for d in ("rig-7", "rig-8")}
    cloud.reload_devices()
    agent = Agent(
        agent_config(
            ws,
            tmp_path / "agent",
            cloud.url,
            api_key=tokens["rig-7"],
            assignments=True,
            site="s4",
            heartbeat_seconds=0.05,
        )
    )
    run_until_idle(agent)  # its first upload, through the real route, says what it runs
    with httpx.Client(base_url=cloud.url, timeout=30) as client:
        seen = client.get("/v1/devices", headers={"x-api-key": KEY})
        assert seen.status_code == 200, seen.text
        assert [
            (r["device_id"], r["pump_class"], r["site"], r["bundle"], r["rollout"])
            for r in seen.json()["devices"]
        ] == [("rig-7", "esp", "s4", "v1", None)]
        keys = [ws.public_key]
        target = fleet_devices.target(ws.bundles["2"], keys)
        plan = Plan(
            rollout_id="r1",
            pump_class="esp",
            target=target,
            previous=fleet_devices.target(ws.bundles["1"], keys),
            soak_seconds=0,
        )
        fleet_devices.start(home, log_root, plan, 0.0)
        assert agent.puller is not None
        agent.puller.next_pull = 0.0
        run_until_idle(agent)  # pulls its assignment, fetches v2, checks and installs it
        assert agent.active is not None and str(agent.active.bundle.bundle_id) == "v2"
        assert agent.models.self_test is not None and agent.models.self_test["ok"] is True

        # The assignment as the device sees it: signed, for it, naming v2 by sha256.
        mine = {"x-api-key": tokens["rig-7"]}
        got = client.get("/v1/edge/assignment", params={"device_id": "rig-7"}, headers=mine)
        assert got.status_code == 200, got.text
        signed = got.json()["assignment"]["signed"]
        assert (signed["device_id"], signed["bundle"], signed["sha256"]) == (
            "rig-7",
            "v2",
            target.sha256,
        )
        assert got.json()["roots"] == []
        data = client.get(signed["url"], headers=mine)
        assert data.status_code == 200
        assert hashlib.sha256(data.content).hexdigest() == target.sha256

        rows = client.get("/v1/devices", headers={"x-api-key": KEY}).json()["devices"]
        assert rows[0]["rollout"]["rollout"] == "r1" and rows[0]["rollout"]["wave"] == 0

        # Who may pull what.
        other = {"x-api-key": tokens["rig-8"]}
        refused: dict[str, Any] = {
            "another's assignment": client.get(
                "/v1/edge/assignment", params={"device_id": "rig-7"}, headers=other
            ),
            "a scoring key": client.get(
                "/v1/edge/assignment", params={"device_id": "rig-7"}, headers={"x-api-key": KEY}
            ),
            "no token": client.get(signed["url"]),
            "another class's bundle": client.get("/v1/edge/bundles/rod/v2", headers=mine),
            "a bundle no rollout hands out": client.get("/v1/edge/bundles/esp/v9", headers=mine),
            "a device token on the devices view": client.get("/v1/devices", headers=mine),
            "a bad device id": client.get(
                "/v1/edge/assignment", params={"device_id": "../x"}, headers=mine
            ),
        }
        assert {k: r.status_code for k, r in refused.items()} == {
            "another's assignment": 403,
            "a scoring key": 403,
            "no token": 401,
            "another class's bundle": 403,
            "a bundle no rollout hands out": 404,
            "a device token on the devices view": 401,
            "a bad device id": 422,
        }
        assert refused["another's assignment"].json()["detail"] == (
            "this token is device rig-8's: it may not pull another's"
        )
        assert refused["a bundle no rollout hands out"].json()["detail"] == (
            "no rollout of esp hands out v9"
        )


def test_the_edge_routes_have_their_doors() -> None:
    assert doors.door_of("/v1/edge/bundles/esp/v2").who is doors.Who.DEVICE
    assert doors.door_of("/v1/edge/assignment").who is doors.Who.DEVICE
    assert doors.door_of("/v1/devices").who is doors.Who.SCORING
    # a path deeper than the template is no bundle route: it needs a scoring key
    assert doors.door_of("/v1/edge/bundles/esp/v2/x") is doors.UNLISTED_V1


def test_no_signing_key_is_a_503_naming_where_it_was_looked_for(
    cloud: InProcessService, tmp_path: Path
) -> None:
    cloud.scorer._signing = None
    cloud.scorer.config = cloud.scorer.config.model_copy(
        update={"signing_key": str(tmp_path / "none.pem")}
    )
    token = devices.issue(
        str(Path(cloud.scorer.config.predictions_dir).parent / "devices.json"), "d1"
    )
    cloud.reload_devices()
    r = httpx.get(
        f"{cloud.url}/v1/edge/assignment", params={"device_id": "d1"}, headers={"x-api-key": token}
    )
    assert r.status_code == 503
    assert r.json()["detail"] == (
        f"no assignment signing key at {tmp_path / 'none.pem'} (made by `pumpfleet edge bundle`)"
    )
