"""Staged rollouts (issue 21): the pure policy with the clock injected (waves, soak,
abort criteria, what each device is assigned), the signed assignment a device accepts or
refuses, and one device pulling its assignment from a small cloud whose routes call the
core functions the Serve routes call."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from edge_agent.agent import Agent
from edge_export.export import signing_key_path
from pumpfleet import assignment, bundle, fleet_devices, trust
from pumpfleet.errors import BundleError, ConflictError
from pumpfleet.rollout import AbortCriteria, Plan, Report, Target, advance, assigned, start
from tests.unit.edge_fleet import FleetCloud
from tests.unit.edge_support import EdgeWorkspace, agent_config, shared_workspace, wrong_golden

H = "0" * 64
V1 = Target(bundle="v1", sha256=H, release=1, file="/b/v1")
V2 = Target(bundle="v2", sha256="2" * 64, release=2, file="/b/v2")


def plan(**kw: Any) -> Plan:
    base: dict[str, Any] = {
        "rollout_id": "r1",
        "pump_class": "esp",
        "target": V2,
        "previous": V1,
        "waves": [50, 100],
        "soak_seconds": 60,
        "ready": 1.0,
    }
    return Plan(**(base | kw))


def fleet(n: int, bundle: str = "v1", cls: str = "esp", **kw: Any) -> dict[str, Report]:
    return {
        f"{cls}-{i:02d}": Report(device_id=f"{cls}-{i:02d}", pump_class=cls, bundle=bundle, **kw)
        for i in range(n)
    }


def on(reports: dict[str, Report], devices: list[str], **kw: Any) -> dict[str, Report]:
    """The reports after ``devices`` switched to v2 (and whatever else ``kw`` says)."""
    return {
        d: r.model_copy(update={"bundle": "v2", **kw}) if d in devices else r
        for d, r in reports.items()
    }


# --- the pure policy ------------------------------------------------------------------------


def test_a_rollout_widens_wave_by_wave_after_each_soaks_and_completes() -> None:
    p = plan(canary_percent=10)
    reports = {**fleet(10), **fleet(4, cls="rod")}
    s = start(p, reports, now=0.0)
    canaries = sorted(s.members)
    assert len(canaries) == 1 and s.members == {canaries[0]: 0}  # 10 % of 10; no rod device
    # Nothing moves until the canary runs v2, then it soaks for 60 s.
    s, said = advance(p, s, reports, 30.0)
    assert said == [] and s.ready_since is None
    reports = on(reports, canaries)
    s, said = advance(p, s, reports, 40.0)
    assert said == [] and s.ready_since == 40.0
    s, said = advance(p, s, reports, 99.0)
    assert said == []
    s, said = advance(p, s, reports, 100.0)
    assert said == ["wave 1: 5 of 10 devices"] and s.wave == 1
    wave1 = sorted(d for d, w in s.members.items() if w == 1)
    assert len(wave1) == 4 and s.wave_started == 100.0
    reports = on(reports, wave1)
    s, _ = advance(p, s, reports, 110.0)
    s, said = advance(p, s, reports, 170.0)
    assert said == ["wave 2: 10 of 10 devices"]
    # A device seen for the first time now joins the last wave, not a past one.
    reports |= fleet(11)  # esp-10 appears (the others keep their reports)
    reports = on(reports, [d for d in s.members if d.startswith("esp")])
    s, said = advance(p, s, reports, 171.0)
    s, said = advance(p, s, reports, 231.0)
    assert said == ["wave 2: 11 of 11 devices"] and s.members["esp-10"] == 2
    reports = on(reports, ["esp-10"])
    s, _ = advance(p, s, reports, 232.0)
    s, said = advance(p, s, reports, 292.0)
    assert said == ["completed: 11 devices run v2"] and s.status == "completed"
    assert not any(d.startswith("rod") for d in s.members)
    assert [e["what"] for e in s.events][-1] == "completed: 11 devices run v2"


def test_canaries_may_be_named_and_the_order_is_stable() -> None:
    reports = fleet(20)
    s = start(plan(canary=["esp-07", "esp-13", "nope"]), reports, 0.0)
    assert s.members == {"esp-07": 0, "esp-13": 0}
    a, b = start(plan(), reports, 0.0), start(plan(), reports, 5.0)
    assert a.members == b.members  # by the rollout id and the device ids, not the clock
    assert start(plan(rollout_id="r2"), reports, 0.0).members != a.members


def test_failing_self_tests_halt_the_rollout_and_send_no_one_further() -> None:
    p = plan(canary_percent=10)
    reports = fleet(20)
    s = start(p, reports, 0.0)
    canaries = sorted(s.members)
    failed = {"bundle": "v2", "ok": False, "detail": "golden outputs differ by 2.5e-01"}
    reports = {
        d: r.model_copy(update={"self_test": failed, "bad_bundles": ["v2"]}) if d in canaries else r
        for d, r in reports.items()
    }
    s, said = advance(p, s, reports, 10.0)
    assert said == [
        f"halted in wave 0: self-test failed on 2 of 2 devices reached "
        f"({canaries[0]}: golden outputs differ by 2.5e-01)"
    ]
    assert s.status == "halted" and advance(p, s, reports, 1000.0) == (s, [])
    # The canaries are sent back to v1 (they never left it); the rest keep what they run.
    assert assigned(p, s, canaries[0]) == (V1, True)
    others = [d for d in reports if d not in canaries]
    assert {assigned(p, s, d) for d in others} == {(None, False)}


@pytest.mark.parametrize(
    ("change", "abort", "why"),
    [
        (
            {"bad_bundles": ["v2"]},
            {},
            "2 of 2 devices reached rolled v2 back",
        ),
        (
            {"alerts": 30, "scored": 100},
            {},
            "alarm rate 30.0% over 200 windows on v2, 2.0% off it (limit 3x)",
        ),
        (
            {"upload_error": True},
            {},
            "uploads failing on 2 of 2 devices reached",
        ),
        (
            {"bad_bundles": ["v2"]},
            {"max_rollbacks": 2},
            None,
        ),
    ],
)
def test_the_abort_criteria(change: dict[str, Any], abort: dict[str, Any], why: str | None) -> None:
    p = plan(canary=["esp-00", "esp-01"], abort=AbortCriteria(**abort))
    reports = fleet(10, alerts=0, scored=0)
    s = start(p, reports, 0.0)
    s, _ = advance(p, s, on(reports, ["esp-00", "esp-01"]), 1.0)  # adopted at 0 alerts
    later = {d: r.model_copy(update={"alerts": 2, "scored": 100}) for d, r in reports.items()}
    later = on(later, ["esp-00", "esp-01"], **change)
    s, said = advance(p, s, later, 2.0)
    assert said == ([f"halted in wave 0: {why}"] if why else [])


def test_a_halted_rollout_resumed_by_hand_goes_on(tmp_path: Path) -> None:
    log_root = tmp_path / "log"
    for d, r in fleet(4).items():
        health = {"pump_class": "esp", "bundle": r.bundle, "counters": {}}
        (log_root / "edge" / d).mkdir(parents=True)
        (log_root / "edge" / d / "health.json").write_text(json.dumps(health))
    entry = fleet_devices.start(tmp_path, log_root, plan(canary=["esp-00"]), 0.0)
    assert entry.state.members == {"esp-00": 0}
    # The canary switches: what the policy noted (adopted, soaking since) is kept between
    # ticks, though nothing was said yet.
    on_v2 = {"pump_class": "esp", "bundle": "v2", "counters": {"alerts": 1, "scored": 9}}
    (log_root / "edge" / "esp-00" / "health.json").write_text(json.dumps(on_v2))
    assert fleet_devices.tick(tmp_path, log_root, 10.0) == []
    kept = fleet_devices.load(tmp_path)
    assert kept.rollouts["esp"].state.adopted == {"esp-00": (1, 9)}
    assert kept.rollouts["esp"].state.ready_since == 10.0 and kept.serial == 2
    assert fleet_devices.tick(tmp_path, log_root, 70.0) == ["esp r1: wave 1: 2 of 4 devices"]
    with pytest.raises(ConflictError, match="esp: rollout r1 is running; halt it first"):
        fleet_devices.start(tmp_path, log_root, plan(rollout_id="r2"), 1.0)
    halted = fleet_devices.set_status(tmp_path, "esp", True, "site 4 asked", 2.0)
    assert halted.state.status == "halted" and halted.state.reason == "site 4 asked"
    resumed = fleet_devices.set_status(tmp_path, "esp", False, "", 3.0)
    assert resumed.state.status == "running" and fleet_devices.load(tmp_path).serial == 5
    with pytest.raises(ConflictError, match="esp: rollout r1 is running"):
        fleet_devices.set_status(tmp_path, "esp", False, "", 4.0)


# --- the signed assignment -----------------------------------------------------------------


def test_an_expired_or_replayed_older_assignment_is_refused(tmp_path: Path) -> None:
    key = bundle.load_or_create_key(tmp_path / "k.pem")
    other = bundle.load_or_create_key(tmp_path / "o.pem")
    root = trust.implicit_root(trust.public_hex(key))
    now = datetime(2027, 3, 1, tzinfo=UTC)

    def made(version: int, days: float = 1.0, device: str = "rig-7", k: Any = key) -> Any:
        a = assignment.Assignment(
            device_id=device, version=version, expires=trust.stamp(now + timedelta(days=days))
        )
        return assignment.sign(a, [k])

    assert assignment.accept(made(5), root, "rig-7", (4, "2027-03-01T12:00:00Z"), now).version == 5
    cases = [
        (made(3), "assignment v3 is older than v4, the last this device trusted"),
        (made(6, days=-1), "assignment v6 expired at 2027-02-28T00:00:00Z"),
        (made(4, days=0.25), "assignment v4 expires before the copy of it this device has"),
        (made(6, device="rig-8"), "assignment v6 is for rig-8, not this device"),
        (made(6, k=other), "assignment: signed by 0 trusted key(s), 1 needed"),
    ]
    for env, why in cases:
        with pytest.raises(BundleError) as e:
            assignment.accept(env, root, "rig-7", (4, "2027-03-01T12:00:00Z"), now)
        assert str(e.value) == why


# --- one device and the cloud ---------------------------------------------------------------


@pytest.fixture
def ws(tmp_path_factory: pytest.TempPathFactory) -> EdgeWorkspace:
    return shared_workspace(tmp_path_factory.getbasetemp())


@pytest.fixture
def cloud(ws: EdgeWorkspace, tmp_path: Path) -> Iterator[FleetCloud]:
    home = tmp_path / "cloud"
    home.mkdir()
    key = bundle.load_or_create_key(signing_key_path(ws.settings))
    c = FleetCloud(home, home / "predictions", key, ws.public_key)
    yield c
    c.close()


def run_until_idle(agent: Agent) -> None:
    agent.run(threading.Event(), exit_when_idle=True)


def report(agent: Agent) -> None:
    """An upload now: the device's health reaches the cloud."""
    agent.next_heartbeat = agent.next_upload = 0.0
    agent.upload()


def pull(agent: Agent) -> None:
    assert agent.puller is not None
    agent.puller.next_pull = 0.0
    run_until_idle(agent)


def test_a_device_pulls_its_assignment_runs_it_and_reports_back(
    ws: EdgeWorkspace, cloud: FleetCloud, tmp_path: Path
) -> None:
    cfg = agent_config(
        ws, tmp_path / "agent", cloud.url, assignments=True, site="s4", heartbeat_seconds=0.05
    )
    agent = Agent(cfg)
    run_until_idle(agent)  # its first report: class, site, bundle
    rows = fleet_devices.devices(cloud.home, cloud.log_root, cloud.clock())
    assert [(r["device_id"], r["pump_class"], r["site"], r["bundle"]) for r in rows] == [
        ("rig-7", "esp", "s4", "v1")
    ]
    keys = [ws.public_key]
    p = plan(
        target=fleet_devices.target(ws.bundles["2"], keys),
        previous=fleet_devices.target(ws.bundles["1"], keys),
        soak_seconds=0,
    )
    fleet_devices.start(cloud.home, cloud.log_root, p, cloud.clock())
    pull(agent)
    assert agent.active is not None and str(agent.active.bundle.bundle_id) == "v2"
    assert agent.models.self_test is not None and agent.models.self_test["ok"] is True
    report(agent)
    health = json.loads((cloud.log_root / "edge" / "rig-7" / "health.json").read_text())
    assert health["bundle"] == "v2" and health["self_test"]["bundle"] == "v2"
    assert health["trust"]["assignment_version"] == fleet_devices.load(cloud.home).serial
    # The cloud sees it on the target; its one-device rollout completes.
    assert fleet_devices.tick(cloud.home, cloud.log_root, cloud.clock()) == [
        "esp r1: completed: 1 devices run v2"
    ]
    # A replayed older assignment (the one that said "keep v1") is refused, and said so.
    cloud.replay = cloud.answers[0]
    pull(agent)
    refused = agent.trust.status()["refused"]
    assert refused["what"] == "assignment" and "is older than" in refused["why"]
    assert str(agent.active.bundle.bundle_id) == "v2"


def test_a_halted_rollout_sends_a_device_back_to_the_bundle_it_ran(
    ws: EdgeWorkspace, cloud: FleetCloud, tmp_path: Path
) -> None:
    cfg = agent_config(ws, tmp_path / "agent", cloud.url, assignments=True, heartbeat_seconds=0.05)
    agent = Agent(cfg)
    run_until_idle(agent)
    keys = [ws.public_key]
    p = plan(
        target=fleet_devices.target(ws.bundles["2"], keys),
        previous=fleet_devices.target(ws.bundles["1"], keys),
    )
    fleet_devices.start(cloud.home, cloud.log_root, p, cloud.clock())
    pull(agent)
    assert agent.active is not None and agent.active.version == 2
    fleet_devices.set_status(cloud.home, "esp", True, "alarms on site 4", cloud.clock())
    pull(agent)
    assert agent.active.version == 1
    assert agent.last_update["rolled_back"] == "v2"
    assert (
        agent.last_update["why"].startswith("assignment v")
        and "rollout r1" in agent.last_update["why"]
    )


def test_an_assigned_bundle_failing_its_self_test_is_reported(
    ws: EdgeWorkspace, cloud: FleetCloud, tmp_path: Path
) -> None:
    cfg = agent_config(ws, tmp_path / "agent", cloud.url, assignments=True, heartbeat_seconds=0.05)
    agent = Agent(cfg)
    run_until_idle(agent)
    bad = wrong_golden(ws, tmp_path, version="3")
    shutil.copy(bad, cloud.home / "v3.pfbundle")
    keys = [ws.public_key]
    p = plan(target=fleet_devices.target(cloud.home / "v3.pfbundle", keys), canary=["rig-7"])
    fleet_devices.start(cloud.home, cloud.log_root, p, cloud.clock())
    pull(agent)
    report(agent)
    assert agent.active is not None and agent.active.version == 1
    health = json.loads((cloud.log_root / "edge" / "rig-7" / "health.json").read_text())
    assert health["self_test"]["bundle"] == "v3" and health["self_test"]["ok"] is False
    said = fleet_devices.tick(cloud.home, cloud.log_root, cloud.clock())
    assert said == [
        "esp r1: halted in wave 0: self-test failed on 1 of 1 devices reached "
        f"(rig-7: {health['self_test']['detail']})"
    ]


def test_the_rollout_commands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pumpfleet.settings import get_settings
    from pumpfleet_cli.main import main

    home = tmp_path / "ws"
    monkeypatch.setenv("PUMPFLEET_HOME", str(home))
    monkeypatch.delenv("PUMPFLEET_SIGNING_KEY", raising=False)
    get_settings.cache_clear()
    try:
        key = bundle.load_or_create_key(home / "keys" / "bundle-signing.pem")
        made = tmp_path / "b.pfbundle"
        meta = {"pump_class": "esp", "model_version": "4", "release": 7}
        bundle.write_bundle(made, {"model.onnx": b"m"}, meta, key)
        for i in range(3):
            folder = home / "predictions" / "edge" / f"esp-{i}"
            folder.mkdir(parents=True)
            (folder / "health.json").write_text(json.dumps({"pump_class": "esp", "bundle": "v3"}))
        argv = ["edge", "rollout", "start", "--class", "esp", "--bundle", str(made)]
        assert main([*argv, "--id", "r9", "--canary", "esp-2"]) == 0
        assert capsys.readouterr().out == "esp: rollout r9 of v4 started; canaries esp-2\n"
        assert main(argv) == 2
        assert capsys.readouterr().err == (
            "pumpfleet edge: error: esp: rollout r9 is running; halt it first\n"
        )
        assert main(["edge", "rollout", "halt", "--class", "esp", "--reason", "storm"]) == 0
        assert capsys.readouterr().out == "esp: rollout r9 halted\n"
        assert main(["edge", "rollout", "resume", "--class", "esp"]) == 0
        assert capsys.readouterr().out == "esp: rollout r9 running\n"
        assert main(["edge", "rollout", "status"]) == 0
        shown = json.loads(capsys.readouterr().out)
        state = shown["rollouts"]["esp"]["state"]
        assert state["members"] == {"esp-2": 0} and state["status"] == "running"
        assert shown["rollouts"]["esp"]["plan"]["target"]["release"] == 7
        assert [(d["device_id"], d["rollout"]["device"]) for d in shown["devices"]] == [
            ("esp-0", "not yet"),
            ("esp-1", "not yet"),
            ("esp-2", "waiting"),
        ]
        bad = ["edge", "rollout", "start", "--class", "esp", "--bundle", str(made), "--waves", "50"]
        assert main(bad) == 2
        assert capsys.readouterr().err == (
            "pumpfleet edge: error: rollout plan: the last wave must reach 100 "
            "(percent of the class)\n"
        )
    finally:
        get_settings.cache_clear()
