"""The edge agent in-process, against a real HTTP server whose route calls the real
storage function: scoring from the spool, store-and-forward, the quota, bundle updates
and rollback, profiling, and the ``pumpfleet-edge`` command. Plus its pure decisions."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_agent import updates
from edge_agent.agent import Agent
from edge_agent.cli import main as edge_main
from edge_agent.config import load_config
from edge_agent.store import Store, thinning
from edge_agent.uploader import backoff
from pumpfleet.manifest import BundleManifest
from tests.unit.edge_support import (
    Cloud,
    EdgeWorkspace,
    HealthWorkspace,
    agent_config,
    manifest,
    shared_health_workspace,
    shared_workspace,
    write_readings,
)

ROOT = Path(__file__).resolve().parents[2]
W = 12


@pytest.fixture
def ws(tmp_path_factory: pytest.TempPathFactory) -> EdgeWorkspace:
    return shared_workspace(tmp_path_factory.getbasetemp())


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[Cloud]:
    c = Cloud(tmp_path / "cloud")
    yield c
    c.close()


def run_until_idle(agent: Agent) -> None:
    agent.run(threading.Event(), exit_when_idle=True)


def expected_keys(readings: list[tuple[str, int]]) -> set[str]:
    """Keys of the windows a stride-1 spec scores: every reading from a pump's 12th on."""
    by_pump: dict[str, list[int]] = {}
    for pump, t in readings:
        by_pump.setdefault(pump, []).append(t)
    return {
        f"rig-7:{pump}:{t * 10**9}" for pump, ts in by_pump.items() for t in sorted(ts)[W - 1 :]
    }


# --- what the device may import ----------------------------------------------------------

BLOCKED = ("ray", "torch", "mlflow", "pandas", "pyarrow", "onnx", "sklearn", "nannyml")


def test_the_agent_runs_without_ray_torch_mlflow_or_pandas(
    ws: EdgeWorkspace, tmp_path: Path
) -> None:
    """In a fresh interpreter where importing any of them raises, the agent starts,
    installs a bundle, self-tests it, scores a spool file and reports its status."""
    cfg = agent_config(ws, tmp_path / "agent", None)
    write_readings(cfg.spool, "r000", ["p1"], 0, 20)
    (tmp_path / "agent.json").write_text(cfg.model_dump_json())
    code = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ImportError("blocked on the device: " + name)
sys.meta_path.insert(0, Block())
from edge_agent.cli import main
assert main(["run", "--config", {str(tmp_path / "agent.json")!r}, "--exit-when-idle"]) == 0
assert main(["status", "--config", {str(tmp_path / "agent.json")!r}]) == 0
print(sorted(m for m in sys.modules if m.split(".")[0] in {BLOCKED!r}))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("[]")
    status = json.loads(done.stdout[: done.stdout.rindex("[]")])
    assert status["model_version"] == 1 and status["counters"]["scored"] == 20 - W + 1


# --- pure decisions ---------------------------------------------------------------------


def test_thinning_drops_every_other_routine_row_oldest_first() -> None:
    rows = [(i, 10) for i in range(1, 11)]
    assert thinning(rows, 25) == [2, 4, 6]
    assert thinning(rows, 0) == []
    # Not enough from one pass: it thins what is left again.
    assert thinning(rows, 80) == [2, 4, 6, 8, 10, 3, 7, 5]
    assert thinning([(1, 10)], 5) == [1]


def test_backoff_doubles_to_its_cap_with_jitter() -> None:
    assert backoff(0, 1, 60, 0.5) == 0
    assert [backoff(n, 1, 60, 1.0) for n in (1, 2, 3, 4)] == [1, 2, 4, 8]
    assert backoff(30, 1, 60, 1.0) == 60
    assert backoff(3, 1, 60, 0.0) == 2  # jitter spreads over [half, full]


def test_refuse_reason_and_probation() -> None:
    def m(**kw: str) -> BundleManifest:
        return BundleManifest.parse({"members": {"model.onnx": "0" * 64}, **kw})

    cur = m(pump_class="esp", model_version="2")
    ok = {"pump_class": "esp", "model_version": "3", "min_agent_version": "0.1.0"}
    assert updates.refuse_reason(m(**ok), cur, []) is None
    assert "not newer" in str(updates.refuse_reason(m(**{**ok, "model_version": "2"}), cur, []))
    assert "class rod" in str(updates.refuse_reason(m(**{**ok, "pump_class": "rod"}), cur, []))
    assert "failed on this device" in str(updates.refuse_reason(m(**ok), cur, ["v3"]))
    assert "needs agent 9.0" in str(
        updates.refuse_reason(m(**{**ok, "min_agent_version": "9.0"}), cur, [])
    )
    policy = updates.Policy(probation_windows=100, error_rate=0.1, min_windows=20)
    p, why = updates.judge(updates.Probation("v3"), 10, 5, policy)
    assert p == updates.Probation("v3", 10, 5) and why is None  # too few windows to judge
    p, why = updates.judge(p, 10, 0, policy)
    assert p is None and "v3: scoring error rate 25% over 20 windows" in str(why)
    p, why = updates.judge(updates.Probation("v3"), 100, 1, policy)
    assert p is None and why is None  # passed


def test_a_bundle_is_newer_by_its_rul_model_or_by_its_health_model() -> None:
    m = manifest

    def why(rul: int, anomaly: int | None, cur: BundleManifest, bad: list[str]) -> str | None:
        return updates.refuse_reason(m(rul, anomaly), cur, bad)

    cur = m(2, 1)
    assert why(2, 2, cur, []) is None  # the same RUL model, a newer health model
    assert why(3, None, cur, []) is None  # a newer RUL model, as before
    assert why(3, 1, cur, []) is None
    assert why(2, None, m(2), []) == "version 2 is not newer than the installed 2"
    assert why(2, 1, m(2), []) is None  # a health model where there was none
    for older in [(2, 1), (2, 0), (2, None), (1, 5)]:
        assert "not newer" in str(why(*older, cur, [])), older
    assert why(2, 0, cur, []) == (
        "bundle v2-anomaly-v0 is not newer than the installed v2-anomaly-v1: "
        "the same RUL model, and health model v0 is not newer than v1"
    )
    # A bundle whose health model failed here is refused, not its RUL model with another.
    assert why(2, 2, cur, ["v2-anomaly-v2"]) == "bundle v2-anomaly-v2 failed on this device before"
    assert why(2, 3, cur, ["v2-anomaly-v2"]) is None
    # A failed bundle without a health model (or an older agent's record) stands for its
    # RUL model: no bundle of that RUL version is taken again.
    assert why(3, 1, cur, ["v3"]) == "version 3 failed on this device before"
    assert why(3, None, cur, ["v3-anomaly-v1"]) is None


def test_an_older_bundle_is_taken_only_as_a_rollback_made_in_the_registry() -> None:
    def m(version: int, health: int | None = None, **back: list[int]) -> BundleManifest:
        return manifest(version, health, rolled_back=back)

    assert "not newer" in str(updates.refuse_reason(m(1), m(2), []))
    assert updates.refuse_reason(m(1, rul=[2]), m(2), []) is None
    assert updates.rolls_back(m(1, rul=[2, 3]), updates.BundleId(2, None)) == "v2"
    # The health model alone rolled back: only that bundle is marked, not its RUL model.
    assert updates.refuse_reason(m(2, 1, anomaly=[2]), m(2, 2), []) is None
    assert updates.rolls_back(m(2, 1, anomaly=[2]), updates.BundleId(2, 2)) == "v2-anomaly-v2"
    # A list that does not name what is installed changes nothing.
    assert "not newer" in str(updates.refuse_reason(m(1, rul=[3]), m(2), []))
    assert updates.rolls_back(manifest(1), updates.BundleId(2, None)) is None


def test_a_registry_rollback_reaches_the_device_and_is_not_undone(tmp_path: Path) -> None:
    from edge_export.export import run_export
    from pumpfleet import lifecycle
    from pumpfleet.registry import model_name
    from tests.unit.edge_support import CLS, make_workspace

    ws = make_workspace(tmp_path / "ws", versions=2)  # champion v2, both exported
    cfg = agent_config(ws, tmp_path / "agent", None)
    agent = Agent(cfg)
    assert agent.install(ws.bundles["2"])["accepted"] and agent.active.version == 2
    stale_v1 = tmp_path / "stale-v1.pfbundle"
    shutil.copy(ws.bundles["1"], stale_v1)  # exported before the rollback
    ws.registry.set_alias(model_name(CLS), lifecycle.PREVIOUS_CHAMPION, "1")
    lifecycle.rollback(ws.registry, CLS, who="ops", why="bad on site 4", now=lifecycle.utc_now())
    out = run_export(ws.settings)["bundles"][CLS]
    assert out["version"] == "1"
    assert "not newer" in agent.install(stale_v1)["why"]  # says nothing of a rollback
    result = agent.install(Path(out["bundle"]))
    assert result["accepted"] and result["rolled_back"] == "v2" and agent.active.version == 1
    # The rolled-back bundle, delivered again, is not taken again.
    again = agent.install(ws.bundles["2"])
    assert not again["accepted"] and again["why"] == "bundle v2 failed on this device before"


def test_install_state_written_before_health_model_updates_is_read(tmp_path: Path) -> None:
    """What the agent wrote when it tracked RUL versions only: numbers, one folder v<N>
    per version whatever its health model."""
    root = tmp_path / "bundles"
    root.mkdir()
    legacy = {"current": 5, "previous": 4, "bad": [12, 3], "probation": 5}
    (root / "state.json").write_text(json.dumps(legacy))
    for v in (4, 5):
        (root / f"v{v}").mkdir()
        (root / f"v{v}" / "bundle.pfbundle").write_bytes(b"old")
    bundles = updates.BundleDir(root)
    s = bundles.state()
    assert (s.current, s.previous, s.bad, s.probation) == ("v5", "v4", ["v3", "v12"], "v5")
    assert bundles.path(s.current).read_bytes() == b"old"
    # Every bundle of a RUL version that failed under the old agent stays refused.
    assert "version 12 failed" in str(updates.refuse_reason(manifest(12, 1), None, s.bad))
    # The next switch writes ids, keeps the old folder as the previous bundle.
    bundles.stage(root / "v5" / "bundle.pfbundle", "v5-anomaly-v2")
    bundles.switch("v5-anomaly-v2")
    bundles.prune()
    saved = json.loads((root / "state.json").read_text())
    assert saved == {
        "current": "v5-anomaly-v2",
        "previous": "v5",
        "bad": ["v3", "v12"],
        "probation": "v5-anomaly-v2",
    }
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["v5", "v5-anomaly-v2"]
    bundles.roll_back()
    s = bundles.state()
    assert (s.current, s.bad) == ("v5", ["v3", "v5-anomaly-v2", "v12"])
    assert not (root / "v5-anomaly-v2").exists()


# --- the cloud's storage ----------------------------------------------------------------


def edge_row(i: int, **kw: Any) -> dict[str, Any]:
    return {
        "request_id": f"rig-7:p1:{i}",
        "timestamp": 1_780_000_000_000_000_000 + i,
        "pump_id": "p1",
        "pump_class": "esp",
        "arm": "edge",
        "model_version": "1",
        "rul_hours": 50.0,
        "failure_probability": 0.1,
        "latency_ms": 0.05,
        "shadow_version": None,
        "shadow_rul_hours": None,
        "shadow_failure_probability": None,
        "in_motor_temp": None,
        "alert": False,
        **kw,
    }


def test_store_upload_stores_a_batch_once_even_when_replicas_race(tmp_path: Path) -> None:
    from pumpfleet.edge_ingest import store_upload
    from pumpfleet.records import validate

    records = validate([edge_row(i) for i in range(5)])
    assert store_upload(tmp_path, "rig-7", "b1", records) == {"stored": 5, "duplicate": False}
    assert store_upload(tmp_path, "rig-7", "b1", records) == {"stored": 0, "duplicate": True}
    results: list[dict[str, Any]] = []
    barrier = threading.Barrier(8)

    def race() -> None:
        barrier.wait()
        results.append(store_upload(tmp_path, "rig-7", "b2", records))

    threads = [threading.Thread(target=race) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r["duplicate"] for r in results) == [False] + [True] * 7
    files = sorted(p.name for p in (tmp_path / "edge" / "rig-7").iterdir())
    assert files == ["b1.parquet", "b2.parquet"]  # no temporary file left behind


def test_edge_rows_read_with_the_services_prediction_log(tmp_path: Path) -> None:
    from pumpfleet.edge_ingest import handle_upload
    from pumpfleet.errors import InputError
    from pumpfleet.predlog import PredictionLog, read_log

    log = PredictionLog(str(tmp_path))
    served = {k: v for k, v in edge_row(99).items() if k != "alert"} | {"arm": "champion"}
    served["timestamp"] = np.datetime64(served["timestamp"], "ns")
    log.append(served)
    log.flush()
    body = {"device_id": "rig-7", "batch_key": "k1", "records": [edge_row(1)], "health": {"ok": 1}}
    assert handle_upload(tmp_path, body) == {"stored": 1, "duplicate": False}
    frame = read_log(str(tmp_path))
    assert sorted(frame["arm"]) == ["champion", "edge"]
    assert str(frame["timestamp"].dtype) == "datetime64[ns]"
    assert json.loads((tmp_path / "edge" / "rig-7" / "health.json").read_text()) == {"ok": 1}
    with pytest.raises(InputError, match="batch_key"):
        handle_upload(tmp_path, {**body, "batch_key": "../../etc"})
    with pytest.raises(InputError, match=r"records\.0\.timestamp: Field required"):
        handle_upload(tmp_path, {**body, "batch_key": "k2", "records": [{"request_id": "x"}]})


# --- scoring from the spool, store and forward --------------------------------------------


def test_spool_files_are_scored_stored_and_delivered_once(
    ws: EdgeWorkspace, cloud: Cloud, tmp_path: Path
) -> None:
    cfg = agent_config(ws, tmp_path / "agent", cloud.url)
    agent = Agent(cfg)
    readings = write_readings(cfg.spool, "r000", ["p1", "p2"], 0, 15)
    readings += write_readings(cfg.spool, "r001", ["p1", "p2"], 15, 15, fmt="jsonl")
    (cfg.spool / "r002.csv").write_text("pump_id,timestamp,motor_temp\np1,yesterday,70\n")
    (cfg.spool / ".r003.csv.tmp").write_text("being written")  # not complete: left alone
    run_until_idle(agent)
    rows = cloud.rows()
    keys = rows.column("request_id").to_pylist()
    assert sorted(keys) == sorted(expected_keys(readings)) and len(set(keys)) == len(keys)
    assert set(rows.column("model_version").to_pylist()) == {"1"}
    assert set(rows.column("device_id").to_pylist()) == {"rig-7"}
    # A bad line is set aside with its reason; the file's other lines (none here) count.
    done = sorted(p.name for p in (cfg.spool / "done").iterdir())
    assert done == ["r000.csv", "r001.jsonl", "r002.csv"]
    rejected = (cfg.spool / "bad" / "r002.csv.rejected.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in rejected] == [
        {"line": 2, "reason": "timestamp: not a time: 'yesterday'", "text": "p1,yesterday,70"}
    ]
    assert (cfg.spool / ".r003.csv.tmp").exists()
    c = agent.store.counters()
    assert c["scored"] == c["uploaded"] == len(keys) and c["bad_files"] == 0
    assert c["rows_set_aside"] == 1
    assert agent.store.buffered()["rows"] == 0
    health = json.loads((cloud.root / "edge" / "rig-7" / "health.json").read_text())
    assert health["model_version"] == 1 and health["agent_version"] == "0.2.0"
    # Windows run across files: the pumps' rolling state survives a restart.
    agent.store.close()
    again = Agent(cfg)
    more = write_readings(cfg.spool, "r004", ["p1"], 30, 3)
    run_until_idle(again)
    assert len(cloud.rows()) == len(keys) + len(more)


def test_offline_with_the_quota_hit_alerts_survive_and_the_rest_is_delivered(
    ws: EdgeWorkspace, cloud: Cloud, tmp_path: Path
) -> None:
    cloud.online = False
    # About 200 rows fit the quota (a row is ~450 bytes); the 133 windows of a hot pump
    # are alerts, the 266 of two healthy pumps routine.
    cfg = agent_config(ws, tmp_path / "agent", cloud.url, quota_mb=90_000 / 2**20)
    cfg = cfg.model_copy(update={"alert_threshold": 0.2})
    agent = Agent(cfg)
    routine, hot = [], []
    for day in range(12):  # "days" offline, one file per day
        routine += write_readings(cfg.spool, f"d{day:02d}a", ["p1", "p2"], day * 12, 12)
        hot += write_readings(cfg.spool, f"d{day:02d}b", ["hot1"], day * 12, 12, failing=True)
        agent.step()
    c = agent.store.counters()
    # Offline: it tried, nothing was delivered, and every row not thinned is buffered.
    assert cloud.posts > 0 and c["uploaded"] == 0
    assert agent.store.buffered()["rows"] == c["scored"] - c["thinned"]
    # Which windows alert is the model's call (it was trained in this run): nearly all of
    # the hot pump's, none of the healthy pumps'. What must hold is that none is lost.
    n_alerts = c["alerts"]
    assert 0.9 * len(expected_keys(hot)) <= n_alerts <= len(expected_keys(hot))
    assert c["thinned"] > 0
    buffered = agent.store.buffered()
    assert buffered["alerts"] == n_alerts  # not one alert dropped
    assert buffered["bytes"] <= cfg.quota_bytes
    cloud.online = True
    run_until_idle(agent)
    rows = cloud.rows()
    flagged = zip(rows["request_id"].to_pylist(), rows["alert"].to_pylist(), strict=True)
    alerts = [k for k, a in flagged if a]
    assert len(alerts) == n_alerts and set(alerts) <= expected_keys(hot)
    routine_keys = expected_keys(routine)
    delivered = set(rows["request_id"].to_pylist()) - set(alerts)
    assert delivered <= routine_keys | expected_keys(hot)
    hot_routine = len(expected_keys(hot)) - n_alerts  # hot windows under the threshold
    assert len(delivered) + c["thinned"] == len(routine_keys) + hot_routine
    assert len(routine_keys) + hot_routine == c["scored"] - n_alerts
    assert agent.store.counters()["uploaded"] == len(rows)


# --- updates and rollback -----------------------------------------------------------------


def test_scores_stay_on_the_old_model_through_bad_updates_and_roll_back(
    ws: EdgeWorkspace, cloud: Cloud, tmp_path: Path
) -> None:
    from tests.unit.edge_support import (
        bundle_with,
        nan_on_low_flow,
        tampered,
        wrong_golden,
    )

    cfg = agent_config(ws, tmp_path / "agent", cloud.url, probation_windows=60)
    agent = Agent(cfg)
    hour = 0

    def feed(flow_dropout: bool = False) -> None:
        nonlocal hour
        write_readings(cfg.spool, f"f{hour:04d}", ["p1"], hour, 20, flow_dropout=flow_dropout)
        hour += 20
        run_until_idle(agent)

    def versions_scored() -> list[str]:
        rows = cloud.rows()
        return sorted(set(rows["model_version"].to_pylist()))

    feed()
    assert agent.active is not None and agent.active.version == 1
    offers = {
        "other-key.pfbundle": bundle_with(ws, tmp_path, version="5", other_key=True),
        "changed.pfbundle": tampered(ws, tmp_path),
        "bad-golden.pfbundle": wrong_golden(ws, tmp_path, version="6"),
        "bad-spec.pfbundle": bundle_with(
            ws, tmp_path, version="8", members={"feature_spec.json": b'{"window": 12}'}
        ),
    }
    for name, path in offers.items():
        shutil.copy(path, cfg.updates / name)
        feed()
        assert agent.active.version == 1, name
        assert not agent.last_update["accepted"], name
    rejected = sorted(p.name for p in (cfg.updates / "rejected").iterdir())
    assert rejected == sorted(offers)
    assert agent.store.counters()["bundles_rejected"] == 4
    # A genuine newer bundle is taken; then the older one is refused.
    shutil.copy(ws.bundles["2"], cfg.updates / "v2.pfbundle")
    feed()
    assert agent.active.version == 2 and agent.fallback is not None
    shutil.copy(ws.bundles["1"], cfg.updates / "v1-again.pfbundle")
    feed()
    assert agent.active.version == 2
    assert "not newer than the installed 2" in agent.last_update["why"]
    # v7 passes its self-test but cannot score a flow dropout: after the switch its
    # error rate crosses the limit, and the agent goes back to v2 by itself.
    shutil.copy(nan_on_low_flow(ws, tmp_path, version="7"), cfg.updates / "v7.pfbundle")
    feed()
    assert agent.active.version == 7 and agent.last_update["accepted"]
    feed(flow_dropout=True)
    assert agent.active.version == 2
    assert "scoring error rate" in agent.last_update["why"]
    state = agent.bundles.state()
    assert (state.current, state.bad) == ("v2", ["v6", "v7", "v8"])
    # Every window was scored: those v7 could not score, by v2.
    assert versions_scored() == ["1", "2", "7"]
    last = cloud.rows().to_pylist()[-20:]
    assert {r["model_version"] for r in last} == {"2"}
    assert len(cloud.rows()) == agent.store.counters()["scored"]
    # A restart comes back on v2, and v7 is not taken again.
    agent.store.close()
    agent = Agent(cfg)
    assert agent.active is not None and agent.active.version == 2
    shutil.copy(nan_on_low_flow(ws, tmp_path, version="7"), cfg.updates / "v7b.pfbundle")
    agent.step()
    assert "failed on this device before" in agent.last_update["why"]


def test_a_current_bundle_changed_on_disk_is_rolled_back_at_start(
    ws: EdgeWorkspace, tmp_path: Path
) -> None:
    cfg = agent_config(ws, tmp_path / "agent", None)
    agent = Agent(cfg)
    shutil.copy(ws.bundles["2"], cfg.updates / "v2.pfbundle")
    agent.step()
    assert agent.active is not None and agent.active.version == 2
    agent.store.close()
    path = agent.bundles.path("v2")
    import tarfile

    with tarfile.open(path) as tar:
        at = tar.getmember("model.onnx").offset_data + 100
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF  # one bit of the weights flips on the device's disk
    path.write_bytes(bytes(data))
    again = Agent(cfg)
    assert again.active is not None and again.active.version == 1
    assert again.store.counters()["rollbacks"] == 1


# --- profiling and the command ------------------------------------------------------------


def test_profile_picks_the_fastest_variant_within_the_accuracy_limit(
    ws: EdgeWorkspace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from edge_agent.profile import choose

    results = {
        "fp32": {"p50_us": 30.0, "within_accuracy": True, "self_test": True},
        "int8": {"p50_us": 10.0, "within_accuracy": False, "self_test": True},
        "fp16": {"p50_us": 20.0, "within_accuracy": True, "self_test": False},
        "fp32_b1": {"p50_us": 25.0, "within_accuracy": True, "self_test": True},
    }
    assert choose(results) == "fp32_b1"
    assert choose({"int8": results["int8"]}) is None

    cfg = agent_config(ws, tmp_path / "agent", None)
    path = tmp_path / "agent.yaml"
    path.write_text(
        "\n".join(f"{k}: {json.dumps(v)}" for k, v in json.loads(cfg.model_dump_json()).items())
    )
    assert edge_main(["profile", "--config", str(path), "--repeats", "2"]) == 0
    out = capsys.readouterr().out
    report = json.loads((cfg.state_dir / "profile.json").read_text())
    assert set(report["variants"]) == {"fp32", "fp32_b1", "fp16", "int8"}
    assert report["variant"] == choose(report["variants"])
    assert f"chosen: {report['variant']}" in out
    # The agent scores with the profiler's choice from then on.
    agent = Agent(load_config(path))
    assert agent.active is not None and agent.active.variant == report["variant"]


def test_status_and_config_errors_are_one_line(
    ws: EdgeWorkspace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = agent_config(ws, tmp_path / "agent", None)
    path = tmp_path / "agent.json"
    path.write_text(cfg.model_dump_json())
    assert edge_main(["status", "--config", str(path)]) == 2
    assert "no agent state" in capsys.readouterr().err
    write_readings(cfg.spool, "r000", ["p1"], 0, 14)
    assert edge_main(["run", "--config", str(path), "--exit-when-idle"]) == 0
    capsys.readouterr()
    assert edge_main(["status", "--config", str(path)]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["model_version"] == 1 and status["buffered"]["rows"] == 3
    assert status["counters"]["scored"] == 3
    for text, why in [
        ('{"device_id": "a b"}', "device_id: String should match pattern"),
        ("{not json", "not valid JSON"),
        (json.dumps({**json.loads(path.read_text()), "quota_mb": -1}), "quota_mb"),
    ]:
        bad = tmp_path / "bad.json"
        bad.write_text(text)
        assert edge_main(["status", "--config", str(bad)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and why in err, err
    assert edge_main(["run", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_readings_on_stdin_are_scored(ws: EdgeWorkspace, tmp_path: Path) -> None:
    cfg = agent_config(ws, tmp_path / "agent", None)
    path = tmp_path / "agent.json"
    path.write_text(cfg.model_dump_json())
    lines = [
        json.dumps(
            {
                "pump_id": "p9",
                "timestamp": f"2026-05-01T{h:02d}:00:00Z",
                "motor_temp": 71,
                "flow": 99,
                "vibration": 1.1,
            }
        )
        for h in range(16)
    ]
    # Lines no door takes (issue 16): each is set aside with its reason, none stops the
    # agent, and the pump's good readings around them are scored.
    hostile = [
        "not json",
        "[1]",
        json.dumps({"pump_id": "p9", "timestamp": "2026-05-01T20:00:00Z", "motor_temp": 9999}),
        json.dumps({"pump_id": "x" * 1_000_000, "timestamp": 0, "motor_temp": 70}),
        json.dumps({"pump_id": "p9", "timestamp": -1e30, "motor_temp": 70}),
        json.dumps({"pump_id": "p9", "timestamp": "2026-05-01T21:00:00Z", "motor_temp": "12.5"}),
        json.dumps({"pump_id": "p9", "timestamp": "2026-05-01T22:00:00Z", "flow": True}),
    ]
    lines = lines[:8] + hostile + lines[8:]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge_agent.cli",
            "run",
            "--config",
            str(path),
            "--stdin",
            "--exit-when-idle",
        ],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    store = Store(cfg.state_dir / "store.db")
    c = store.counters()
    assert c["scored"] == 16 - W + 1 and c["rows_set_aside"] == len(hostile)
    for why in (
        "not JSON",
        "not an object: list",
        "motor_temp: 9999 is outside its physical range -40 to 250",
        "pump_id: 1 to 128 printable characters",
        "timestamp: not a time: -1e+30",
        "motor_temp: a number or null, not '12.5'",
        "flow: a number or null, not 'True'",
    ):
        assert why in done.stderr, why


def test_agent_dockerfile_passes_hadolint() -> None:
    dockerfile = ROOT / "edge_agent" / "Dockerfile"
    done = subprocess.run(
        [str(Path(sys.executable).parent / "hadolint"), "--format", "json", str(dockerfile)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert json.loads(done.stdout or "null") == [], done.stdout + done.stderr
    text = dockerfile.read_text()
    assert "l4t" in text.lower() and "pumpfleet-edge" in text


def test_gpu_benchmark_script_passes_shellcheck() -> None:
    script = ROOT / "benchmarks" / "edge_gpu.sh"
    assert os.access(script, os.X_OK)
    done = subprocess.run(
        [str(Path(sys.executable).parent / "shellcheck"), str(script)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_windows_roll_across_batches_skip_replays_and_skip_windows_over_a_gap() -> None:
    from edge_agent.source import Reading
    from edge_agent.windows import roll
    from tests.unit.edge_support import SPEC

    spec = SPEC.model_copy(update={"stride": 2})
    hour = 3600 * 10**9

    def readings(hours: range, pump: str = "p1") -> list[Reading]:
        return [Reading(pump, h * hour, {"motor_temp": float(h)}) for h in hours]

    first = roll({}, readings(range(10)), spec)
    assert first.windows == [] and first.states["p1"]["ts"] == 9 * hour
    second = roll(first.states, readings(range(5, 16)), spec)  # 5..9 again: replays
    assert second.stale == 5
    # Windows end at hour 11 (the 12th reading), then every 2nd reading.
    assert [e // hour for e in second.ends] == [11, 13, 15]
    assert [row[0] for row in second.windows[0]] == [float(h) for h in range(12)]
    assert len(second.states["p1"]["rows"]) == W - 1
    # The pump was off for a day: windows spanning the gap are not formed (training's
    # rule: at most 1.5 x 11 hours from first to last reading), so the next one is the
    # first of 12 new readings; the five candidates before it span the gap.
    third = roll(second.states, readings(range(40, 52)), spec)
    assert third.gaps == 5 and [e // hour for e in third.ends] == [51]
    # A model with other inputs starts every pump's window afresh; replays stay replays.
    other = spec.model_copy(update={"channels": ["flow", "motor_temp", "vibration"]})
    fourth = roll(third.states, readings(range(50, 64)), other)
    assert (fourth.resets, fourth.stale) == (1, 2)
    assert [e // hour for e in fourth.ends] == [63]
    assert fourth.states["p1"]["inputs"] == other.inputs


def test_unacknowledged_batches_stay_and_are_resent_with_the_same_key(
    ws: EdgeWorkspace, cloud: Cloud, tmp_path: Path
) -> None:
    """A wrong API key (401), a server that is down, and one that answers 200 without
    an acknowledgement: nothing is deleted, the agent backs off, and the same batch key
    goes again once the cloud acknowledges."""
    from edge_agent.uploader import Uploader, UploadError

    write_readings(tmp_path / "agent" / "spool", "r000", ["p1"], 0, 20)
    wrong = agent_config(ws, tmp_path / "agent", cloud.url, api_key="not-the-key")
    agent = Agent(wrong)
    agent.step()
    assert agent.last_error is not None and "HTTP 401" in agent.last_error
    assert agent.failures == 1 and agent.next_upload > agent.clock()
    pending = agent.store.pending_batch(25)
    assert pending is not None and len(pending[1]) == 9
    with pytest.raises(UploadError, match="refused"):
        Uploader("http://127.0.0.1:9", "k", "rig-7", timeout=2).post("b", [], {})
    with pytest.raises(UploadError, match="HTTP 404"):
        Uploader(cloud.url + "/nope", "edge-key", "rig-7").post("b", [], {})
    agent.store.close()
    right = Agent(agent_config(ws, tmp_path / "agent", cloud.url))
    run_until_idle(right)
    assert cloud.rows().num_rows == 9
    assert [p.name for p in (cloud.root / "edge" / "rig-7").glob("*.parquet")] == [
        f"{pending[0]}.parquet"
    ]


def test_a_model_that_raises_counts_as_failed_windows_not_a_crash(
    ws: EdgeWorkspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = agent_config(ws, tmp_path / "agent", None)
    agent = Agent(cfg)
    assert agent.active is not None

    def broken(*args: object) -> object:
        raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION")

    monkeypatch.setattr(agent.active.session, "run", broken)
    write_readings(cfg.spool, "r000", ["p1"], 0, 14)
    agent.step()
    c = agent.store.counters()
    assert (c["scoring_errors"], c["scored"]) == (3, 0)
    assert (cfg.spool / "done" / "r000.csv").exists()


# --- the health (anomaly) model on the device ----------------------------------------------


@pytest.fixture
def hws(tmp_path_factory: pytest.TempPathFactory) -> HealthWorkspace:
    return shared_health_workspace(tmp_path_factory.getbasetemp())


def spooled_windows(spool: Path) -> dict[str, np.ndarray]:
    """Every stride-1 raw window of the readings in the spool's done files, by the key
    the agent gives its record (readings are hourly and gapless)."""
    import csv

    by_pump: dict[str, list[tuple[int, list[float]]]] = {}
    for path in sorted((spool / "done").glob("*.csv")):
        with open(path) as f:
            for r in csv.DictReader(f):
                values = [float(r[c]) for c in ("motor_temp", "flow", "vibration")]
                by_pump.setdefault(r["pump_id"], []).append((int(r["timestamp"]), values))
    out = {}
    for pump, rows in by_pump.items():
        rows.sort()
        for end in range(W - 1, len(rows)):
            window = np.array([v for _, v in rows[end - W + 1 : end + 1]])
            out[f"rig-7:{pump}:{rows[end][0] * 10**9}"] = window
    return out


def test_health_scores_on_the_device_are_the_clouds_and_anomalies_are_flagged(
    hws: HealthWorkspace, cloud: Cloud, tmp_path: Path
) -> None:
    """v1 (no anomaly model) scores without health; v2 brings the anomaly model, and from
    then on every window's health score and flag are those the cloud computes from the
    same window: ``HealthSpec.score(window_errors(torch model, features))``."""
    from pumpfleet.anomaly import window_errors
    from pumpfleet.features import window_features
    from tests.unit.edge_support import ANOMALY_SPEC

    cfg = agent_config(hws, tmp_path / "agent", cloud.url)
    agent = Agent(cfg)
    assert agent.active is not None and agent.active.health is None
    write_readings(cfg.spool, "r000", ["p1", "hot1"], 0, 14)
    run_until_idle(agent)
    shutil.copy(hws.bundles["2"], cfg.updates / "v2.pfbundle")
    write_readings(cfg.spool, "r001", ["p1"], 14, 24)
    write_readings(cfg.spool, "r002", ["hot1"], 14, 24, failing=True)
    write_readings(cfg.spool, "r003", ["warm1"], 14, 24, wear=0.4)  # scores around 1
    run_until_idle(agent)
    assert agent.active.version == 2 and agent.active.health is not None
    assert "health scores (fp32) match" in agent.last_update["self_test"]
    rows = {r["request_id"]: r for r in cloud.rows().to_pylist()}
    old = [r for r in rows.values() if r["model_version"] == "1"]
    new = [r for r in rows.values() if r["model_version"] == "2"]
    assert len(old) == 6 and len(new) == 24 + 24 + 13
    assert all(
        (r["health_score"], r["anomaly"], r["anomaly_version"]) == (None, None, None) for r in old
    )
    assert {r["anomaly_version"] for r in new} == {"1"}
    windows = spooled_windows(cfg.spool)
    keys = sorted(r["request_id"] for r in new)
    raw = np.stack([windows[k] for k in keys])
    errors = window_errors(hws.anomaly, window_features(raw, ANOMALY_SPEC))
    cloud_scores, cloud_flags = hws.health.score(errors), hws.health.flag(errors)
    device_scores = np.array([rows[k]["health_score"] for k in keys])
    np.testing.assert_allclose(device_scores, cloud_scores, rtol=1e-5, atol=1e-5)
    assert [rows[k]["anomaly"] for k in keys] == cloud_flags.tolist()
    # The hot pump is anomalous and the healthy one is not: it is the model's call, but
    # this one tells them apart.
    hot = [rows[k]["anomaly"] for k in keys if ":hot1:" in k]
    cool = [rows[k]["anomaly"] for k in keys if ":p1:" in k]
    assert sum(hot) >= 0.9 * len(hot) and sum(cool) <= 0.2 * len(cool)
    c = agent.store.counters()
    assert c["anomalies"] == int(cloud_flags.sum()) and c["anomaly_errors"] == 0
    assert agent.health()["anomaly_version"] == "1"
    # The cloud types the health columns the same for a batch of nulls as for scores.
    import pyarrow.parquet as pq

    for f in (cloud.root / "edge" / "rig-7").glob("*.parquet"):
        schema = pq.read_schema(f)
        assert str(schema.field("health_score").type) == "double"
        assert str(schema.field("anomaly").type) == "bool"
        assert str(schema.field("anomaly_version").type) == "string"


def test_anomalies_are_kept_through_the_quota_like_alerts(tmp_path: Path) -> None:
    import sqlite3

    # A store made by an agent from before health models gets the column.
    path = tmp_path / "store.db"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL UNIQUE,"
        " alert INTEGER NOT NULL, payload TEXT NOT NULL, bytes INTEGER NOT NULL, batch TEXT);"
        "INSERT INTO outbox (key, alert, payload, bytes) VALUES ('old', 0, '{}', 2);"
    )
    db.commit()
    db.close()
    store = Store(path)
    row = {"pump_id": "p1", "pad": "x" * 80}
    records = [
        {"key": f"k{i}", "alert": i % 20 == 0, "anomaly": i % 10 == 5, "row": row}
        for i in range(100)
    ]
    thinned = store.commit(records, {}, quota_bytes=3000)
    # 101 rows (the old one of 2 bytes, 100 of 105), 15 of them alerts or anomalies, are
    # thinned to 90 % of the quota (2,700 bytes) by dropping every other routine row,
    # oldest first: 43, then 21, then 11 more; 26 rows of 2,627 bytes are left.
    assert thinned == store.counters()["thinned"] == 43 + 21 + 11
    assert store.buffered()["rows"] == 101 - thinned and store.buffered()["bytes"] == 2627
    kept = {r[0] for r in store.db.execute("SELECT key FROM outbox")}
    assert {f"k{i}" for i in range(100) if i % 10 == 5 or i % 20 == 0} <= kept
    assert store.buffered()["anomalies"] == 10 and store.buffered()["alerts"] == 5
    assert store.counters()["anomalies"] == 10 and store.counters()["alerts"] == 5
    # `status` reads an old store that no agent has opened since without the column.
    old = tmp_path / "old.db"
    sqlite3.connect(old).executescript(
        "CREATE TABLE outbox (id INTEGER PRIMARY KEY, key TEXT, alert INTEGER, payload TEXT,"
        " bytes INTEGER, batch TEXT); CREATE TABLE counters (name TEXT, value INTEGER);"
        "CREATE TABLE meta (name TEXT, value TEXT); INSERT INTO meta VALUES ('store_id', 'a');"
    )
    assert Store(old, readonly=True).buffered()["anomalies"] == 0


def test_a_failing_anomaly_model_leaves_health_null_and_is_counted(
    hws: HealthWorkspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = agent_config(hws, tmp_path / "agent", None, initial_bundle=hws.bundles["2"])
    agent = Agent(cfg)
    assert agent.active is not None and agent.active.health is not None

    def broken(*args: object) -> object:
        raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION")

    health = agent.active.health
    monkeypatch.setattr(health, "model", dataclasses.replace(health.model, run=broken))
    write_readings(cfg.spool, "r000", ["p1"], 0, 14)
    agent.step()
    c = agent.store.counters()
    assert (c["scored"], c["scoring_errors"], c["anomaly_errors"]) == (3, 0, 3)
    _, rows = agent.store.pending_batch(10) or ("", [])
    assert [(r["rul_hours"] > 0, r["health_score"], r["anomaly"]) for r in rows] == [
        (True, None, None)
    ] * 3


def test_bundles_with_a_changed_or_wrong_anomaly_model_are_refused(
    hws: HealthWorkspace, tmp_path: Path
) -> None:
    import io
    import tarfile

    from pumpfleet import bundle
    from tests.unit.edge_support import bundle_with

    cfg = agent_config(hws, tmp_path / "agent", None)
    agent = Agent(cfg)
    src = bundle.read_bundle(hws.bundles["2"], hws.public_key)
    g = np.load(io.BytesIO(src.members["golden.npz"]))
    buf = io.BytesIO()
    np.savez(buf, raw=g["raw"], expected=g["expected"], anomaly_errors=g["anomaly_errors"] * 3)
    swapped = tmp_path / "swapped.pfbundle"  # another health spec put in after signing
    shutil.copy(hws.bundles["2"], swapped)
    with tarfile.open(swapped) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    files["health_spec.json"] = files["health_spec.json"].replace(
        b'"margin": 1.0', b'"margin": 9.0'
    )
    with tarfile.open(swapped, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    offers = {
        "swapped": (swapped, "health_spec.json does not match its sha256"),
        "golden": (
            bundle_with(hws, tmp_path, "3", members={"golden.npz": buf.getvalue()}),
            "golden health scores differ",
        ),
        "spec": (
            bundle_with(hws, tmp_path, "4", members={"health_spec.json": b'{"target_far": 2}'}),
            "validation error",
        ),
    }
    for name, (path, why) in offers.items():
        result = agent.install(path)
        assert not result["accepted"] and why in result["why"], (name, result)
        assert agent.active is not None and agent.active.version == 1
    assert agent.install(hws.bundles["2"])["accepted"]


def test_the_health_model_runs_int8_only_beside_int8_and_where_export_allowed_it(
    hws: HealthWorkspace, tmp_path: Path
) -> None:
    from edge_agent.model import Scorer, open_bundle

    b = open_bundle(hws.bundles["2"], hws.public_key)
    assert b.anomaly is not None and sorted(b.anomaly.variants) == ["fp32", "int8"]
    fit = b.anomaly.variants["int8"].within_accuracy
    for variant, expect in [
        ("fp32", "fp32"),
        ("fp16", "fp32"),
        ("int8", "int8" if fit else "fp32"),
    ]:
        scorer = Scorer(b, variant)
        assert scorer.health is not None and scorer.health.variant == expect, variant
        ok, why = scorer.self_test()
        assert ok, why


# --- a new health model with the same RUL model -----------------------------------------


def rows_of(agent: Agent) -> list[dict[str, Any]]:
    """Every record in the agent's outbox, oldest first."""
    return [json.loads(r[0]) for r in agent.store.db.execute("SELECT payload FROM outbox")]


def test_a_new_health_model_with_the_same_rul_model_is_an_update_of_its_own(
    hws: HealthWorkspace, cloud: Cloud, tmp_path: Path
) -> None:
    from pumpfleet.anomaly import window_errors
    from pumpfleet.features import window_features
    from tests.unit.edge_support import ANOMALY_SPEC, health_update

    cfg = agent_config(hws, tmp_path / "agent", cloud.url, initial_bundle=hws.bundles["2"])
    agent = Agent(cfg)
    write_readings(cfg.spool, "r000", ["p1"], 0, 14)
    run_until_idle(agent)
    # Health model v2: the same RUL model v2, a threshold twice as high.
    offer = health_update(hws, tmp_path, "2", margin=2.0)
    shutil.copy(offer, cfg.updates / offer.name)
    write_readings(cfg.spool, "r001", ["p1"], 14, 10)
    write_readings(cfg.spool, "r002", ["hot1"], 14, 14, failing=True)
    run_until_idle(agent)
    assert agent.last_update["accepted"], agent.last_update
    assert agent.last_update["bundle_id"] == "v2-anomaly-v2"
    assert agent.active is not None and agent.active.health is not None
    assert (agent.active.version, agent.active.health.version) == (2, "2")
    assert agent.fallback is not None and agent.fallback.health is not None
    assert agent.fallback.health.version == "1" and agent.probation is not None
    state = agent.bundles.state()
    assert (state.current, state.previous, state.probation) == (
        "v2-anomaly-v2",
        "v2-anomaly-v1",
        "v2-anomaly-v2",
    )
    rows = {r["request_id"]: r for r in cloud.rows().to_pylist()}
    by_version: dict[str, list[str]] = {}
    for k, r in rows.items():
        by_version.setdefault(r["anomaly_version"], []).append(k)
    assert {v: len(ks) for v, ks in by_version.items()} == {"1": 3, "2": 10 + 3}
    assert {rows[k]["model_version"] for k in rows} == {"2"}
    # The device scores with the new health spec: the cloud's scores of the same windows.
    windows = spooled_windows(cfg.spool)
    keys = sorted(by_version["2"])
    errors = window_errors(
        hws.anomaly, window_features(np.stack([windows[k] for k in keys]), ANOMALY_SPEC)
    )
    spec = hws.health.model_copy(update={"margin": 2.0})
    np.testing.assert_allclose(
        [rows[k]["health_score"] for k in keys], spec.score(errors), rtol=1e-5, atol=1e-5
    )
    assert [rows[k]["anomaly"] for k in keys] == spec.flag(errors).tolist()
    assert agent.health()["bundle"] == "v2-anomaly-v2"
    # The bundle with the older health model is not taken back.
    result = agent.install(hws.bundles["2"])
    assert not result["accepted"] and result["why"] == (
        "bundle v2-anomaly-v1 is not newer than the installed v2-anomaly-v2: the same RUL "
        "model, and health model v1 is not newer than v2"
    )
    # A restart comes back on the new health model, still on probation beside the old.
    agent.store.close()
    again = Agent(cfg)
    assert again.active is not None and again.active.health is not None
    assert again.active.health.version == "2" and again.probation is not None
    assert again.fallback is not None and again.fallback.health is not None
    assert again.fallback.health.version == "1"


def test_a_health_model_that_fails_leaves_the_installed_bundle_serving(
    hws: HealthWorkspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.unit.edge_support import health_update

    cfg = agent_config(
        hws, tmp_path / "agent", None, initial_bundle=hws.bundles["2"], probation_windows=60
    )
    agent = Agent(cfg)
    # Its golden health scores are off: refused before the switch.
    result = agent.install(health_update(hws, tmp_path, "2", golden_scale=3.0))
    assert not result["accepted"] and "golden health scores differ" in result["why"]
    assert agent.active is not None and str(agent.active.bundle.bundle_id) == "v2-anomaly-v1"
    assert agent.fallback is None and agent.probation is None
    state = agent.bundles.state()
    assert (state.current, state.bad) == ("v2-anomaly-v1", ["v2-anomaly-v2"])
    write_readings(cfg.spool, "r000", ["p1"], 0, 14)
    agent.step()
    assert {r["anomaly_version"] for r in rows_of(agent)} == {"1"}
    # Health model v3 passes its self-test, then raises on every window after the switch:
    # on probation, it is rolled back, and the old health model scores those windows.
    assert agent.install(health_update(hws, tmp_path, "3"))["accepted"]
    assert agent.active.health is not None and agent.active.health.version == "3"

    def broken(*args: object) -> object:
        raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION")

    health = agent.active.health
    monkeypatch.setattr(health, "model", dataclasses.replace(health.model, run=broken))
    write_readings(cfg.spool, "r001", ["p1"], 14, 30)
    agent.step()
    assert agent.active.health is not None and agent.active.health.version == "1"
    assert agent.last_update == {
        "rolled_back": "v2-anomaly-v3",
        "why": "v2-anomaly-v3: scoring error rate 100% over 30 windows after the switch (limit 5%)",
    }
    state = agent.bundles.state()
    assert (state.current, state.previous, state.bad) == (
        "v2-anomaly-v1",
        None,
        ["v2-anomaly-v2", "v2-anomaly-v3"],
    )
    new = rows_of(agent)[3:]
    assert len(new) == 30 and {r["anomaly_version"] for r in new} == {"1"}
    assert all(r["health_score"] is not None for r in new)
    assert agent.store.counters()["rollbacks"] == 1
    # Refused again; another health model for the same RUL model is still tried.
    assert "failed on this device before" in agent.install(health_update(hws, tmp_path, "3"))["why"]
    assert agent.install(health_update(hws, tmp_path, "4"))["accepted"]


def test_a_device_whose_bundles_the_previous_agent_installed_takes_a_new_health_model(
    hws: HealthWorkspace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bundles, state and profile as the agent wrote them when it tracked RUL versions
    only: one folder v<N> per version, numbers in state.json, the profile by version."""
    from tests.unit.edge_support import health_update

    cfg = agent_config(hws, tmp_path / "agent", None)
    root = cfg.state_dir / "bundles"
    for v in ("1", "2"):
        (root / f"v{v}").mkdir(parents=True)
        shutil.copy(hws.bundles[v], root / f"v{v}" / "bundle.pfbundle")
    (root / "state.json").write_text('{"current": 2, "previous": 1, "bad": [7], "probation": 2}')
    (cfg.state_dir / "profile.json").write_text('{"bundle_version": 2, "variant": "fp16"}')
    agent = Agent(cfg)
    assert agent.active is not None and agent.active.health is not None
    assert (agent.active.version, agent.active.health.version) == (2, "1")
    assert agent.active.variant == "fp16"
    assert agent.fallback is not None and agent.fallback.version == 1
    assert agent.probation == updates.Probation("v2")
    # RUL v7 failed under the old agent: no bundle of it is taken, whatever its health model.
    from tests.unit.edge_support import bundle_with

    v7 = agent.install(bundle_with(hws, tmp_path, "7"))
    assert v7 == {
        "bundle": "v7-ours-0.pfbundle",
        "accepted": False,
        "why": "version 7 failed on this device before",
    }
    result = agent.install(health_update(hws, tmp_path, "2"))
    assert result["accepted"] and result["bundle_id"] == "v2-anomaly-v2"
    saved = json.loads((root / "state.json").read_text())
    assert saved == {
        "current": "v2-anomaly-v2",
        "previous": "v2",
        "bad": ["v7"],
        "probation": "v2-anomaly-v2",
    }
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["v2", "v2-anomaly-v2"]
    # Restarted, it loads the new bundle and the one in the old folder beside it.
    agent.store.close()
    again = Agent(cfg)
    assert again.active is not None and again.active.health is not None
    assert again.active.health.version == "2"
    assert again.fallback is not None and again.fallback.health is not None
    assert again.fallback.health.version == "1"
    path = tmp_path / "agent.json"
    path.write_text(cfg.model_dump_json())
    assert edge_main(["status", "--config", str(path)]) == 0
    status = json.loads(capsys.readouterr().out)
    assert (status["bundle"], status["model_version"], status["previous_bundle"]) == (
        "v2-anomaly-v2",
        2,
        "v2",
    )


def test_profile_times_the_health_model_beside_each_variant(
    hws: HealthWorkspace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from edge_agent.profile import choose
    from tests.unit.edge_support import health_update

    cfg = agent_config(hws, tmp_path / "agent", None, initial_bundle=hws.bundles["2"])
    path = tmp_path / "agent.json"
    path.write_text(cfg.model_dump_json())
    assert edge_main(["profile", "--config", str(path), "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    report = json.loads((cfg.state_dir / "profile.json").read_text())
    assert (report["bundle"], report["bundle_version"], report["anomaly_version"]) == (
        "v2-anomaly-v1",
        2,
        "1",
    )
    b = Agent(cfg).active
    assert b is not None and b.bundle.anomaly is not None
    int8 = "int8" if b.bundle.anomaly.variants["int8"].within_accuracy else "fp32"
    beside = {"fp32": "fp32", "fp32_b1": "fp32", "fp16": "fp32", "int8": int8}
    assert {n: r["health"]["variant"] for n, r in report["variants"].items()} == beside
    for r in report["variants"].values():
        assert 0 < r["health"]["p50_us"] <= r["health"]["p99_us"]
    lines = out.splitlines()
    assert lines[0] == "bundle v2, health model v1, 32 golden windows"
    for line in lines[1:5]:
        name = line.split()[0]
        assert f"+ health {beside[name]:4s} p50" in line, line
    assert report["variant"] == choose(report["variants"])
    # The choice weighs the health model's time too.
    timed = {
        "fp32": {"p50_us": 10.0, "health": {"p50_us": 30.0}},
        "int8": {"p50_us": 12.0, "health": {"p50_us": 5.0}},
    }
    fit = {"within_accuracy": True, "self_test": True}
    assert choose({n: r | fit for n, r in timed.items()}) == "int8"
    # A profile is for its bundle: another health model runs fp32 until profiled anew.
    (cfg.state_dir / "profile.json").write_text(
        json.dumps({"bundle": "v2-anomaly-v1", "bundle_version": 2, "variant": "fp16"})
    )
    agent = Agent(cfg)
    assert agent.active is not None and agent.active.variant == "fp16"
    assert agent.install(health_update(hws, tmp_path, "2"))["variant"] == "fp32"
