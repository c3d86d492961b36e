"""The scoring service over real HTTP on Ray Serve, then the monitor on what it logged."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from pumpfleet import devices
from pumpfleet.predlog import read_log
from pumpfleet.registry import CHALLENGER, CHAMPION, Registry, model_name
from pumpfleet.routing import SHADOW_TAG, WEIGHT_TAG, assign_arm
from pumpfleet.schema import PUMP_CLASSES
from pumpfleet.snapshot import open_snapshot
from serve_apps.security import Secrets, digest
from tests.conftest import free_port

pytestmark = [pytest.mark.ray, pytest.mark.slow]

WEIGHT = 0.5
API_KEY = "test-scoring-key-0123456789"
ADMIN_TOKEN = "test-admin-token-0123456789"
ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}
ARROW = "application/vnd.apache.arrow.stream"


@pytest.fixture(scope="module")
def service(workspace: dict[str, Any]) -> Iterator[dict[str, Any]]:
    from serve_apps import run as serve_run

    s = workspace["settings"]
    secrets = Secrets(api_keys=(digest(API_KEY),), admin_tokens=(digest(ADMIN_TOKEN),))
    reg = Registry(s.tracking_uri)
    served = [c for c in PUMP_CLASSES if reg.version_by_alias(model_name(c), CHAMPION)]
    for cls in served:  # a challenger that is not the champion: both arms really serve
        if reg.version_by_alias(model_name(cls), CHALLENGER) in (None, champion_of(reg, cls)):
            reg.set_alias(model_name(cls), CHALLENGER, copy_version(reg, cls, CHAMPION))
    # The first class gets a health model, trained, gated and promoted as a user would.
    trained = train_health_model(s, served[0])
    url = serve_run.start(
        s, free_port(), WEIGHT, secrets=secrets, max_body_bytes=2**20, refresh_seconds=1.0
    )
    snap = open_snapshot(str(s.features_dir))
    with httpx.Client(base_url=url, timeout=30, headers={"x-api-key": API_KEY}) as client:
        yield {
            "client": client,
            "settings": s,
            "snapshot": snap,
            "served": served,
            "url": url,
            "health": trained,
        }
    serve_run.stop()
    # The workspace is shared with other modules: leave it as it was found.
    from pumpfleet.registry import anomaly_model_name

    reg.client.delete_registered_model(anomaly_model_name(trained["pump_class"]))


def train_health_model(settings: Any, cls: str) -> dict[str, Any]:
    from pumpfleet.health import AnomalyGate
    from pumpfleet.search_space import AnomalySearchSpace
    from ray_jobs.train_anomaly import run_train_anomaly

    space = AnomalySearchSpace(
        lr=[1e-2], epochs=2, target_far=0.05, gate=AnomalyGate(min_precision=0, min_recall=0)
    )
    out = run_train_anomaly(settings, "latest", space, classes=[cls], promote=True)
    result = out["classes"][cls]
    assert result["registered"] and result["promoted"], result
    return {"pump_class": cls, **result}


def arrow_batch(snap: Any, cls: str, n: int) -> tuple[bytes, int]:
    """The first ``n`` holdout windows of ``cls`` as an Arrow IPC stream (and how many)."""
    import pyarrow as pa

    raw, cols = snap.load(cls, "holdout")
    n = min(n, len(raw))
    table = pa.table(
        {
            "pump_id": [str(p) for p in cols["pump_id"][:n]],
            "pump_class": [cls] * n,
            "window": pa.array(
                list(raw[:n].reshape(n, -1).astype("float32")), pa.list_(pa.float32())
            ),
        }
    )
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes(), n


def champion_of(reg: Registry, cls: str) -> str | None:
    return reg.version_by_alias(model_name(cls), CHAMPION)


def copy_version(reg: Registry, cls: str, alias: str) -> str:
    """A new registry version of the same model (the same artifacts and tags)."""
    name = model_name(cls)
    src = reg.version_by_alias(name, alias)
    assert src is not None
    version = str(reg.client.copy_model_version(f"models:/{name}/{src}", name).version)
    tags = {k: v for k, v in reg.version_tags(name, src).items() if not k.startswith("audit.")}
    reg.set_version_tags(name, version, tags)
    return version


def body(snap: Any, cls: str, i: int = 0, pump_id: str | None = None) -> dict[str, Any]:
    spec = snap.spec(cls)
    raw, cols = snap.load(cls, "holdout")
    return {
        "pump_id": pump_id or str(cols["pump_id"][i]),
        "pump_class": cls,
        "readings": {c: [float(v) for v in raw[i][:, j]] for j, c in enumerate(spec.inputs)},
    }


def test_scores_a_window(service: dict[str, Any]) -> None:
    snap, client = service["snapshot"], service["client"]
    for cls in service["served"]:
        r = client.post("/v1/score", json=body(snap, cls))
        assert r.status_code == 200, r.text
        out = r.json()
        spec = snap.spec(cls)
        assert 0.0 <= out["rul_hours"] <= spec.rul_cap_hours
        assert 0.0 <= out["failure_probability"] <= 1.0
        assert out["alert"] == (out["failure_probability"] >= spec.alert_threshold)
        assert out["arm"] == assign_arm(out["pump_id"], WEIGHT, "pumpfleet-ab-1")


def test_the_same_window_scores_the_same_as_onnxruntime_offline(service: dict[str, Any]) -> None:
    from pumpfleet import runtime
    from pumpfleet.features import decode_outputs, window_features

    snap, client = service["snapshot"], service["client"]
    cls = service["served"][0]
    # A pump id that lands on the champion arm.
    pump = next(
        f"p{i}" for i in range(100) if assign_arm(f"p{i}", WEIGHT, "pumpfleet-ab-1") == "champion"
    )
    req = body(snap, cls, 3, pump_id=pump)
    served = client.post("/v1/score", json=req).json()
    model = Registry(service["settings"].tracking_uri).load(model_name(cls), CHAMPION)
    raw = np.array([req["readings"][c] for c in model.spec.inputs]).T
    rul, prob = decode_outputs(
        runtime.run(runtime.session(model.onnx), window_features(raw[None], model.spec)), model.spec
    )
    assert served["model_version"] == model.version
    assert math.isclose(served["rul_hours"], float(rul[0]), abs_tol=1e-4)
    assert math.isclose(served["failure_probability"], float(prob[0]), abs_tol=1e-6)


def test_a_pump_stays_on_its_arm(service: dict[str, Any]) -> None:
    snap, client = service["snapshot"], service["client"]
    cls = service["served"][0]
    arms = {
        pid: {
            client.post("/v1/score", json=body(snap, cls, 0, pid)).json()["arm"] for _ in range(3)
        }
        for pid in ("esp-a", "esp-b", "esp-c", "esp-d", "esp-e", "esp-f")
    }
    assert all(len(a) == 1 for a in arms.values())
    assert {next(iter(a)) for a in arms.values()} == {"champion", "challenger"}


def _bad_requests(good: dict[str, Any]) -> list[tuple[Any, str]]:
    first = next(iter(good["readings"]))
    n = len(good["readings"][first])
    nan = {**good, "readings": {**good["readings"], first: [float("nan")] * n}}
    return [
        ({**good, "pump_class": "submarine"}, "pump_class"),
        ({k: v for k, v in good.items() if k != "pump_id"}, "pump_id"),
        ({**good, "pump_id": ""}, "pump_id"),
        ({**good, "readings": "hot"}, "readings"),
        ({**good, "readings": {**good["readings"], first: [1.0, 2.0]}}, first),
        ({**good, "readings": {**good["readings"], first: ["x"] * n}}, first),
        ({**good, "readings": {**good["readings"], "warp": [1.0] * n}}, "warp"),
        ({**good, "readings": {k: v for k, v in good["readings"].items() if k != first}}, first),
        (nan, first),
        ([good], "body"),
        ({**good, "priority": "high"}, "priority"),
    ]


def test_bad_requests_get_4xx_naming_the_field(service: dict[str, Any]) -> None:
    client = service["client"]
    good = body(service["snapshot"], service["served"][0])
    for bad, field in _bad_requests(good):
        # json.dumps writes NaN as a bare token, as a careless client would.
        r = client.post(
            "/v1/score", content=json.dumps(bad), headers={"content-type": "application/json"}
        )
        assert r.status_code == 422, (field, r.status_code, r.text)
        assert field in str(r.json()["detail"]), (field, r.text)
    r = client.post(
        "/v1/score", content=b'{"pump_id": NaN', headers={"content-type": "application/json"}
    )
    assert r.status_code == 422
    r = client.post(
        "/v1/score",
        content=b'{"pump_id": "a", "pump_class": "esp", "readings": {"flow": [NaN]}}',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 422 and "flow" in r.text


def test_models_and_health(service: dict[str, Any]) -> None:
    client = service["client"]
    assert client.get("/healthz").json() == {"status": "ok"}
    models = client.get("/v1/models").json()
    assert models["default_challenger_weight"] == WEIGHT
    assert sorted(models["classes"]) == sorted(service["served"])
    for listed in models["classes"].values():  # what is served, and where it comes from
        assert listed["weight_saved"] or listed["challenger_weight"] == WEIGHT


def test_predictions_are_logged_and_monitored(service: dict[str, Any]) -> None:
    from ray_jobs.monitor import run_monitor

    s, snap, client = service["settings"], service["snapshot"], service["client"]
    cls = service["served"][0]
    n = 110
    # pumps of this test's own: an earlier test's rows still in a replica's buffer reach
    # the log meanwhile, so a count of all rows could be reached before every one of these
    pumps = {f"{cls}-monitored-{i:03d}": i for i in range(n)}
    for pump, i in pumps.items():
        assert client.post("/v1/score", json=body(snap, cls, i, pump_id=pump)).status_code == 200
    deadline = time.monotonic() + 20
    logged = read_log(str(s.predictions_dir))
    while not pumps.keys() <= set(logged.get("pump_id", [])) and time.monotonic() < deadline:
        time.sleep(0.3)
        logged = read_log(str(s.predictions_dir))
    assert pumps.keys() <= set(logged.get("pump_id", []))
    assert {"request_id", "pump_id", "arm", "model_version", "rul_hours", "latency_ms"} <= set(
        logged.columns
    )
    result = run_monitor(s, "latest", chunk_size=50)
    assert cls in result["classes"]
    assert result["classes"][cls]["analysis_rows"] >= n
    report = result["report"]
    html = Path(report).read_text()
    assert "pumpfleet drift report" in html and cls in html


def test_keys_and_tokens_guard_the_routes(service: dict[str, Any]) -> None:
    good = body(service["snapshot"], service["served"][0])
    with httpx.Client(base_url=service["url"], timeout=30) as anon:
        assert anon.get("/healthz").status_code == 200  # probes need no key
        assert anon.get("/readyz").json()["ready"] is True
        assert anon.post("/v1/score", json=good).status_code == 401
        # no key: 401 before the body is even looked at
        assert anon.post("/v1/score", content=b"{not json").status_code == 401
        wrong = {"x-api-key": "not-the-key-0123456789"}
        assert anon.post("/v1/score", json=good, headers=wrong).status_code == 401
        scoring = {"x-api-key": API_KEY}
        assert anon.post("/v1/admin/reload", headers=scoring).status_code == 403
        admin = {"authorization": f"Bearer {ADMIN_TOKEN}"}
        assert anon.post("/v1/admin/reload", headers=admin).status_code == 200
        assert anon.post("/v1/admin/reload").status_code == 401


def test_a_huge_body_gets_413(service: dict[str, Any]) -> None:
    client = service["client"]
    r = client.post(
        "/v1/score/batch", content=b"x" * (2**20 + 1), headers={"content-type": "application/json"}
    )
    assert r.status_code == 413


def test_batches_score_like_single_requests_and_report_bad_items(service: dict[str, Any]) -> None:
    snap, client = service["snapshot"], service["client"]
    cls = service["served"][0]
    items = [body(snap, cls, i) for i in range(5)]
    items[2] = {**items[2], "readings": {"flow": [1.0]}}  # one bad item
    r = client.post("/v1/score/batch", json={"items": items})
    assert r.status_code == 200, r.text
    out = r.json()
    assert [e["index"] for e in out["errors"]] == [2] and out["results"][2] is None
    for i in (0, 1, 3, 4):
        single = client.post("/v1/score", json=items[i]).json()
        assert math.isclose(out["results"][i]["rul_hours"], single["rul_hours"], abs_tol=1e-4)
        assert out["results"][i]["arm"] == single["arm"]
    assert client.post("/v1/score/batch", json={"items": []}).status_code == 422
    all_bad = client.post("/v1/score/batch", json={"items": [{"pump_id": "x"}]})
    assert all_bad.status_code == 422


def test_an_arrow_batch_scores_like_json(service: dict[str, Any]) -> None:
    import pyarrow as pa

    snap, client = service["snapshot"], service["client"]
    cls = service["served"][0]
    stream, n = arrow_batch(snap, cls, 50)
    r = client.post("/v1/score/batch", content=stream, headers={"content-type": ARROW})
    assert r.status_code == 200, r.text
    arrow = r.json()["results"]
    as_json = client.post(
        "/v1/score/batch", json={"items": [body(snap, cls, i) for i in range(n)]}
    ).json()["results"]
    for a, b in zip(arrow, as_json, strict=True):
        assert math.isclose(a["rul_hours"], b["rul_hours"], abs_tol=1e-3)
    # asked for Arrow back: one row per item, in order
    r = client.post(
        "/v1/score/batch", content=stream, headers={"content-type": ARROW, "accept": ARROW}
    )
    assert r.status_code == 200 and r.headers["content-type"] == ARROW
    back = pa.ipc.open_stream(r.content).read_all()
    assert back.column("pump_id").to_pylist() == [a["pump_id"] for a in arrow]
    assert back.column("rul_hours").to_pylist() == [a["rul_hours"] for a in arrow]
    assert back.column("error").null_count == n
    bad = client.post(
        "/v1/score/batch",
        content=b"nope",
        headers={"content-type": "application/vnd.apache.arrow.stream"},
    )
    assert bad.status_code == 422


def test_feedback_is_accepted_and_checked(service: dict[str, Any]) -> None:
    client, snap, cls = service["client"], service["snapshot"], service["served"][0]
    scored = body(snap, cls, 0, "feedback-1")
    assert client.post("/v1/score", json=scored).status_code == 200
    ok = {"pump_id": "feedback-1", "pump_class": cls, "failed_at": time.time()}
    assert client.post("/v1/feedback", json=ok).json() == {"accepted": 1}
    # a pump the fleet has never seen (a mistyped id) or named as another class
    r = client.post("/v1/feedback", json={**ok, "pump_id": "feedback-01"})
    assert r.status_code == 404 and "pump_id 'feedback-01'" in r.text
    other = next(c for c in ("esp", "rod") if c != cls)
    r = client.post("/v1/feedback", json={**ok, "pump_class": other})
    assert r.status_code == 422 and "pump_class" in r.text
    r = client.post("/v1/feedback", json={"pump_id": "feedback-1", "pump_class": cls})
    assert r.status_code == 422 and "failed_at" in r.text
    r = client.post("/v1/feedback", json={**ok, "rul_hours": -1})
    assert r.status_code == 422 and "rul_hours" in r.text
    # found by the fuzzer: a time past datetime64's range was a 500
    r = client.post("/v1/feedback", json={**ok, "failed_at": 1e300})
    assert r.status_code == 422 and "failed_at" in r.text


def test_split_and_shadow_change_live_and_reach_every_replica(service: dict[str, Any]) -> None:
    s, snap, client = service["settings"], service["snapshot"], service["client"]
    cls = service["served"][0]
    reg = Registry(s.tracking_uri)
    r = client.post(
        "/v1/admin/split", json={"pump_class": cls, "challenger_weight": 0.0}, headers=ADMIN
    )
    assert r.status_code == 200 and r.json()[cls]["challenger_weight"] == 0.0
    arms = {client.post("/v1/score", json=body(snap, cls, i)).json()["arm"] for i in range(10)}
    assert arms == {"champion"}
    # stored on the registered model, where every replica (and a restarted one) reads it
    _, tags = reg.model_state(model_name(cls))
    assert tags[WEIGHT_TAG] == "0.0"
    # shadow: the champion answers, the challenger's score is logged beside it
    before = len(read_log(str(s.predictions_dir)))
    client.post("/v1/admin/split", json={"pump_class": cls, "shadow": True}, headers=ADMIN)
    for i in range(5):
        assert client.post("/v1/score", json=body(snap, cls, i)).json()["arm"] == "champion"

    def shadowed() -> int:
        logged = read_log(str(s.predictions_dir))
        return int(logged["shadow_version"].notna().sum()) if len(logged) > before else 0

    deadline = time.monotonic() + 20
    while shadowed() < 5 and time.monotonic() < deadline:
        time.sleep(0.3)
    logged = read_log(str(s.predictions_dir))
    shadow_rows = logged[logged["shadow_version"].notna()]
    assert len(shadow_rows) >= 5
    challenger = reg.version_by_alias(model_name(cls), CHALLENGER)
    assert set(shadow_rows["shadow_version"]) == {challenger}
    assert set(shadow_rows["model_version"]) == {champion_of(reg, cls)}
    # a change made in the registry alone (as through another replica) is followed
    reg.set_model_tags(model_name(cls), {WEIGHT_TAG: "1.0", SHADOW_TAG: "false"})

    def followed() -> bool:  # a refresh may fall between the two tag writes: wait for both
        served = client.get("/v1/models").json()["classes"][cls]
        return served["shadow"] is False and served["challenger_weight"] == 1.0

    wait_until(followed)
    arms = {client.post("/v1/score", json=body(snap, cls, i)).json()["arm"] for i in range(5)}
    assert arms == {"challenger"}
    client.post(
        "/v1/admin/split", json={"pump_class": cls, "challenger_weight": WEIGHT}, headers=ADMIN
    )


def wait_until(check: Any, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.2)


def test_a_promotion_is_swapped_in_under_load_with_no_failed_request(
    service: dict[str, Any],
) -> None:
    s, snap, client = service["settings"], service["snapshot"], service["client"]
    cls = service["served"][0]
    reg = Registry(s.tracking_uri)
    name = model_name(cls)
    champion = champion_of(reg, cls)
    new = copy_version(reg, cls, CHAMPION)
    codes: list[int] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=service["url"], headers={"x-api-key": API_KEY}) as c:
            i = 0
            while not stop.is_set():
                codes.append(c.post("/v1/score", json=body(snap, cls, i % 20)).status_code)
                i += 1

    workers = [threading.Thread(target=load) for _ in range(4)]
    for w in workers:
        w.start()
    try:
        time.sleep(1.0)
        reg.set_alias(name, CHAMPION, new)  # no reload call: the replica follows the registry
        wait_until(lambda: client.get("/v1/models").json()["classes"][cls]["champion"] == new)
        time.sleep(1.0)
        reg.set_alias(name, CHAMPION, champion)  # and back, through the admin route
        reloaded = client.post("/v1/admin/reload", headers=ADMIN).json()
        assert reloaded["classes"][cls]["champion"] == champion
        time.sleep(0.5)
    finally:
        stop.set()
        for w in workers:
            w.join()
        reg.set_alias(name, CHAMPION, champion)
    assert len(codes) > 50 and set(codes) == {200}, sorted(set(codes))


def test_a_version_goes_through_staging_before_production(service: dict[str, Any]) -> None:
    from pumpfleet.lifecycle import history
    from serve_apps.deploy import Credentials, DeployError, Suite, deploy

    s, client = service["settings"], service["client"]
    cls = service["served"][0]
    reg = Registry(s.tracking_uri)
    name = model_name(cls)
    creds = Credentials(API_KEY, ADMIN_TOKEN)
    suite = Suite(windows=16, latency_requests=40, p99_budget_ms=2000)
    before = reg.version_by_alias(name, CHALLENGER)
    new = copy_version(reg, cls, CHAMPION)
    with pytest.raises(DeployError, match="has not passed staging"):
        deploy(s, service["url"], cls, new, "production", creds, suite)
    try:
        staged = deploy(s, service["url"], cls, new, "staging", creds, suite)
        assert staged["status"] == "passed" and staged["reasons"] == []
        assert staged["parity_max_abs"] <= 1e-5 and staged["requests"] == 40
        staging = client.get("/staging/v1/models").json()
        # the staging app scores health with the class's health champion, as production
        health = service["health"]["version"] if cls == service["health"]["pump_class"] else None
        listed = staging["classes"][cls]
        listed.pop("weight_saved")  # saved by the split tests above; unsaved when run alone
        assert staging["stage"] == "staging" and listed == {
            "champion": new, "challenger_weight": WEIGHT, "shadow": False, "anomaly": health,
        }  # fmt: skip
        # production has not picked it up
        assert client.get("/v1/models").json()["classes"][cls]["challenger"] == before
        prod = deploy(s, service["url"], cls, new, "production", creds, suite)
        assert prod["status"] == "passed" and prod["previous"] == before
        assert client.get("/v1/models").json()["classes"][cls]["challenger"] == new
        tags = reg.version_tags(name, new)
        assert tags["deploy.staging.status"] == tags["deploy.production.status"] == "passed"
        actions = [r.action for r in history(reg, cls) if r.version == new]
        assert actions == ["deploy-staging", "deploy-production"]
        # a version the staging suite fails is recorded as failed and goes no further
        with pytest.raises(DeployError, match="p99 latency"):
            deploy(s, service["url"], cls, new, "staging", creds, Suite(p99_budget_ms=0.001))
        assert reg.version_tags(name, new)["deploy.staging.status"] == "failed"
        with pytest.raises(DeployError, match="has not passed staging"):
            deploy(s, service["url"], cls, new, "production", creds, suite)
    finally:
        if before is not None:
            reg.set_alias(name, CHALLENGER, before)
        client.post("/v1/admin/reload", headers=ADMIN)


def test_retrain_is_an_admin_route_that_says_when_it_cannot_submit(
    service: dict[str, Any],
) -> None:
    client, cls = service["client"], service["served"][0]
    ok = {"classes": [cls], "reason": "test"}
    assert client.post("/v1/admin/retrain", json=ok).status_code == 403  # a scoring key
    r = client.post("/v1/admin/retrain", json={**ok, "classes": ["submarine"]}, headers=ADMIN)
    assert r.status_code == 422 and "classes" in r.text
    r = client.post("/v1/admin/retrain", json={"classes": [cls]}, headers=ADMIN)
    assert r.status_code == 422 and "reason" in r.text
    # this service has no Ray job server configured: an honest 503, not a 500
    r = client.post("/v1/admin/retrain", json=ok, headers=ADMIN)
    assert r.status_code == 503 and "PUMPFLEET_JOBS_ADDRESS" in r.text


def test_torch_http_and_edge_score_a_window_alike(service: dict[str, Any], tmp_path: Path) -> None:
    """One feature and scoring path: the same raw windows (regime-normalised features)
    score the same in torch (as trained), over HTTP, and in the edge agent's scorer on
    the signed bundle `pumpfleet export` writes (verified as a device verifies it)."""
    import torch

    from edge_agent.model import Scorer, open_bundle
    from edge_export.export import run_export
    from pumpfleet.features import decode_outputs, window_features

    s, snap, client = service["settings"], service["snapshot"], service["client"]
    reg = Registry(s.tracking_uri)
    exported = run_export(s, str(tmp_path / "bundles"))
    assert set(exported["bundles"]) >= set(service["served"])
    with_regimes = 0
    for cls in service["served"]:
        client.post(
            "/v1/admin/split", json={"pump_class": cls, "challenger_weight": 0.0}, headers=ADMIN
        )
        model = reg.load(model_name(cls), CHAMPION)
        with_regimes += model.spec.regimes is not None
        raw, _ = snap.load(cls, "holdout", model.spec)
        raw = raw[:8]
        with torch.no_grad():
            t_rul, t_prob = decode_outputs(
                model.torch_model()(torch.from_numpy(window_features(raw, model.spec))).numpy(),
                model.spec,
            )
        installed = open_bundle(Path(exported["bundles"][cls]["bundle"]), exported["public_key"])
        assert str(installed.version) == model.version
        edge, _ = Scorer(installed).predict(raw)
        e_rul, e_prob = edge.rul_hours, edge.failure_probability
        assert edge.ok.all()
        for i in range(len(raw)):
            out = client.post("/v1/score", json=body(snap, cls, i)).json()
            assert out["model_version"] == model.version
            for leg, ref in (("torch", t_rul[i]), ("edge", e_rul[i])):
                got = out["rul_hours"]
                assert abs(got - ref) <= 1e-5 * max(1.0, abs(ref)), (cls, i, leg, got, ref)
            for leg, ref in (("torch", t_prob[i]), ("edge", e_prob[i])):
                got = out["failure_probability"]
                assert abs(got - ref) <= 1e-5, (cls, i, leg, got, ref)
        client.post(
            "/v1/admin/split", json={"pump_class": cls, "challenger_weight": WEIGHT}, headers=ADMIN
        )
    assert with_regimes, "the parity must cover regime-normalised features"


def test_ab_report_reads_the_logged_predictions_and_feedback(service: dict[str, Any]) -> None:
    s, snap, client = service["settings"], service["snapshot"], service["client"]
    cls = service["served"][0]
    pumps = {str(body(snap, cls, i)["pump_id"]) for i in range(20)}
    for weight in (0.0, 1.0):  # both arms score these pumps
        client.post(
            "/v1/admin/split", json={"pump_class": cls, "challenger_weight": weight}, headers=ADMIN
        )
        for i in range(20):
            assert client.post("/v1/score", json=body(snap, cls, i)).status_code == 200
    client.post(
        "/v1/admin/split", json={"pump_class": cls, "challenger_weight": WEIGHT}, headers=ADMIN
    )
    soon = time.time() + 3600
    for pid in pumps:
        r = client.post("/v1/feedback", json={"pump_id": pid, "pump_class": cls, "failed_at": soon})
        assert r.status_code == 200
    time.sleep(2.5)  # a flush
    done = subprocess.run(
        [sys.executable, "-m", "pumpfleet_cli", "ab", "report", "--class", cls, "--json"],
        env={**os.environ, "PUMPFLEET_HOME": str(s.home)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    arms = {a["arm"]: a for a in out["arms"]}
    assert {"champion", "challenger"} <= set(arms)
    assert all(a["pump_class"] == cls for a in arms.values())
    assert arms["champion"]["labelled"] >= 20 and arms["challenger"]["labelled"] >= 20
    for a in arms.values():  # the interval holds the estimate (to rounding: one pump's
        lo, hi = a["rmse_ci"]  # resamples all equal it)
        assert lo - 1e-6 <= a["rmse"] <= hi + 1e-6, a


def test_fuzzing_the_openapi_spec_gets_no_5xx(service: dict[str, Any]) -> None:
    """At least 1,000 requests generated from the service's own OpenAPI (valid and
    invalid bodies), with a scoring key and with the admin token: no 5xx, healthy after."""
    import requests
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis import GenerationMode

    client, url = service["client"], service["url"]
    schema = schemathesis.openapi.from_dict(client.get("/openapi.json").json())
    sent: list[tuple[str, int, str]] = []
    session = requests.Session()
    for result in schema.get_all_operations():
        op = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            if op.path == "/v1/admin/retrain" and mode is GenerationMode.POSITIVE:
                continue  # a valid one is a real submission: tested above
            # 75 valid and 75 invalid bodies a write: 1,401 requests in all, 23 s on a
            # quiet machine (150 each took twice as long and found nothing more)
            examples = 75 if op.method == "post" else 10

            @settings(
                max_examples=examples, deadline=None, database=None, derandomize=True,
                suppress_health_check=list(HealthCheck),
            )  # fmt: skip
            @given(case=op.as_strategy(generation_mode=mode))
            def call(case: Any) -> None:
                admin = case.operation.path.startswith("/v1/admin")
                headers = {"x-api-key": API_KEY, **(ADMIN if admin else {})}
                r = case.call(base_url=url, session=session, headers=headers)
                sent.append((case.operation.label, r.status_code, r.text[:200]))

            try:
                call()
            except Exception as e:  # an operation with no invalid input to generate
                if type(e).__name__ != "Unsatisfiable":
                    raise
    # A valid retrain request on a service with no Ray job server is an honest 503 that
    # names the setting (negative generation sometimes yields a valid body); nothing else.
    unconfigured = ("POST /v1/admin/retrain", 503)
    five = [
        x for x in sent
        if x[1] >= 500 and not (x[:2] == unconfigured and "PUMPFLEET_JOBS_ADDRESS" in x[2])
    ]  # fmt: skip
    assert len(sent) >= 1000 and five == [], (len(sent), five[:10])
    assert client.get("/readyz").status_code == 200
    cls = service["served"][0]
    assert client.post("/v1/score", json=body(service["snapshot"], cls)).status_code == 200
    client.post(
        "/v1/admin/split", json={"challenger_weight": WEIGHT, "shadow": False}, headers=ADMIN
    )


def test_edge_uploads_are_stored_once_beside_the_prediction_log(service: dict[str, Any]) -> None:
    s, client = service["settings"], service["client"]
    records = [
        {"request_id": f"edge-{i}", "timestamp": time.time_ns(), "pump_id": "esp-00001",
         "pump_class": "esp", "model_version": "1", "rul_hours": 50.0 + i,
         "failure_probability": 0.1}
        for i in range(3)
    ]  # fmt: skip
    up = {"device_id": "jetson-7", "batch_key": "b-000001", "records": records}
    token = devices.issue(str(s.home / devices.FILE), "jetson-7")  # as the operator would
    assert client.post("/v1/admin/reload", headers=ADMIN).status_code == 200  # read it now
    device = {"x-api-key": token}
    assert client.post("/v1/edge/upload", json=up, headers={"x-api-key": ""}).status_code == 401
    r = client.post("/v1/edge/upload", json=up)  # a scoring key uploads as no device
    assert r.status_code == 403 and "pumpfleet edge device issue" in r.text
    first = client.post("/v1/edge/upload", json=up, headers=device)
    assert first.status_code == 200 and first.json() == {"stored": 3, "duplicate": False}
    again = client.post("/v1/edge/upload", json=up, headers=device)  # a retry after a lost ack
    assert again.status_code == 200 and again.json() == {"stored": 0, "duplicate": True}
    other = {**up, "records": records[:2]}  # the same batch key with other records
    assert client.post("/v1/edge/upload", json=other, headers=device).status_code == 409
    r = client.post("/v1/edge/upload", json={**up, "device_id": "jetson-8"}, headers=device)
    assert r.status_code == 403 and "jetson-7" in r.text
    logged = read_log(str(s.predictions_dir))
    edge = logged[logged["request_id"].astype(str).str.startswith("edge-")]
    assert len(edge) == 3 and set(edge["arm"]) == {"edge"}
    bad = {**up, "batch_key": "b-2", "records": [{"pump_id": "x"}]}
    r = client.post("/v1/edge/upload", json=bad, headers=device)
    assert r.status_code == 422 and "request_id" in r.text
    r = client.post("/v1/edge/upload", json={**up, "device_id": "../etc"}, headers=device)
    assert r.status_code == 422 and "device_id" in r.text


def test_prometheus_metrics_per_class_and_arm(service: dict[str, Any]) -> None:
    import ray

    snap, client, cls = service["snapshot"], service["client"], service["served"][0]
    for i in range(5):
        client.post("/v1/score", json=body(snap, cls, i))
    port = ray._private.worker.global_worker.node.metrics_export_port
    deadline, found = time.monotonic() + 60, {}
    while time.monotonic() < deadline:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        mine = [x for x in text.splitlines() if x.startswith("ray_pumpfleet_")]
        found = {
            "requests": [x for x in mine if x.startswith("ray_pumpfleet_scoring_requests")
                         and f'pump_class="{cls}"' in x and 'outcome="ok"' in x],
            "latency": [x for x in mine if x.startswith("ray_pumpfleet_scoring_latency_ms")],
            "version": [x for x in mine if x.startswith("ray_pumpfleet_model_version")
                        and 'arm="champion"' in x],
        }  # fmt: skip
        if all(found.values()):
            break
        time.sleep(2)
    assert all(found.values()), {k: len(v) for k, v in found.items()}
    assert all(API_KEY not in x for x in text.splitlines())  # no key in what is exported


def test_a_score_can_explain_itself(service: dict[str, Any]) -> None:
    snap, client, cls = service["snapshot"], service["client"], service["served"][0]
    plain = client.post("/v1/score", json=body(snap, cls)).json()
    assert plain["explanation"] is None
    r = client.post("/v1/score", json={**body(snap, cls), "explain": True})
    assert r.status_code == 200, r.text
    out = r.json()
    why = out["explanation"]
    channels = snap.spec(cls).channels
    assert set(why["risk_by_channel"]) == set(channels) == set(why["rul_hours_by_channel"])
    assert math.isclose(why["failure_probability"], out["failure_probability"], abs_tol=1e-6)
    assert set(why["top"]) <= set(channels)
    assert all(len(v) * why["time_block_steps"] >= 1 for v in why["risk_by_time"].values())


def test_health_scores_come_with_every_window_of_a_class_with_a_health_model(
    service: dict[str, Any],
) -> None:
    import pyarrow as pa

    from pumpfleet.features import window_features
    from pumpfleet.health import HealthSpec
    from pumpfleet.registry import anomaly_model_name
    from pumpfleet.runtime import run, session

    s, snap, client = service["settings"], service["snapshot"], service["client"]
    cls = service["health"]["pump_class"]
    model = Registry(s.tracking_uri).load(anomaly_model_name(cls), CHAMPION)
    health = HealthSpec.model_validate(model.model_config["health"])
    assert model.version == service["health"]["version"]
    reqs = [body(snap, cls, i) for i in range(12)]
    raw = np.stack([np.array([r["readings"][c] for c in model.spec.inputs]).T for r in reqs])
    want = health.score(run(session(model.onnx), window_features(raw, model.spec)))
    singles = [client.post("/v1/score", json=r).json() for r in reqs]
    batch = client.post("/v1/score/batch", json={"items": reqs}).json()["results"]
    stream, _ = arrow_batch(snap, cls, len(reqs))
    arrow = pa.ipc.open_stream(
        client.post(
            "/v1/score/batch", content=stream, headers={"content-type": ARROW, "accept": ARROW}
        ).content
    ).read_all()
    for got in (singles, batch, arrow.to_pylist()):
        assert [g["anomaly_version"] for g in got] == [model.version] * len(reqs)
        assert np.allclose([g["health_score"] for g in got], want, atol=1e-5)
        assert [g["anomaly"] for g in got] == [bool(w > 1.0) for w in want]
    # A class with no health model says so with nulls, not with a made-up score.
    other = next(c for c in service["served"] if c != cls)
    plain = client.post("/v1/score", json=body(snap, other)).json()
    assert (plain["health_score"], plain["anomaly"], plain["anomaly_version"]) == (None,) * 3
    listed = client.get("/v1/models").json()["classes"]
    assert listed[cls]["anomaly"] == model.version and listed[other]["anomaly"] is None
    # Logged for the monitor, beside the RUL prediction.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        logged = read_log(str(s.predictions_dir))
        mine = logged[logged.get("anomaly_version", pd.Series(dtype=object)) == model.version]
        if len(mine) >= 3 * len(reqs):
            break
        time.sleep(0.3)
    assert len(mine) >= 3 * len(reqs)
    assert mine["health_score"].astype(float).between(-1e6, 1e6).all()
