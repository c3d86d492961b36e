"""The scoring service over real HTTP on Ray Serve, then the monitor on what it logged."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from pumpfleet.predlog import read_log
from pumpfleet.registry import CHAMPION, Registry, model_name
from pumpfleet.routing import assign_arm
from pumpfleet.schema import PUMP_CLASSES
from pumpfleet.snapshot import open_snapshot
from serve_apps.security import Secrets, digest
from tests.conftest import free_port

pytestmark = [pytest.mark.ray, pytest.mark.slow]

WEIGHT = 0.5
API_KEY = "test-scoring-key-0123456789"
ADMIN_TOKEN = "test-admin-token-0123456789"


@pytest.fixture(scope="module")
def service(workspace: dict[str, Any]) -> Iterator[dict[str, Any]]:
    from serve_apps import run as serve_run

    s = workspace["settings"]
    secrets = Secrets(api_keys=(digest(API_KEY),), admin_tokens=(digest(ADMIN_TOKEN),))
    url = serve_run.start(s, free_port(), WEIGHT, secrets=secrets, max_body_bytes=2**20)
    reg = Registry(s.tracking_uri)
    served = [c for c in PUMP_CLASSES if reg.version_by_alias(model_name(c), CHAMPION)]
    snap = open_snapshot(str(s.features_dir))
    with httpx.Client(base_url=url, timeout=30, headers={"x-api-key": API_KEY}) as client:
        yield {"client": client, "settings": s, "snapshot": snap, "served": served, "url": url}
    serve_run.stop()


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
    from pumpfleet import onnx_io
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
        onnx_io.run(onnx_io.session(model.onnx), window_features(raw[None], model.spec)), model.spec
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
    assert models["challenger_weight"] == WEIGHT
    assert sorted(models["classes"]) == sorted(service["served"])


def test_predictions_are_logged_and_monitored(service: dict[str, Any]) -> None:
    from ray_jobs.monitor import run_monitor

    s, snap, client = service["settings"], service["snapshot"], service["client"]
    cls = service["served"][0]
    before = len(read_log(str(s.predictions_dir)))
    n = 110
    for i in range(n):
        assert client.post("/v1/score", json=body(snap, cls, i)).status_code == 200
    deadline = time.monotonic() + 20
    while len(read_log(str(s.predictions_dir))) < before + n and time.monotonic() < deadline:
        time.sleep(0.3)
    logged = read_log(str(s.predictions_dir))
    assert len(logged) >= before + n
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
    raw, cols = snap.load(cls, "holdout")
    n = min(50, len(raw))
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
    r = client.post(
        "/v1/score/batch",
        content=sink.getvalue().to_pybytes(),
        headers={"content-type": "application/vnd.apache.arrow.stream"},
    )
    assert r.status_code == 200, r.text
    arrow = r.json()["results"]
    as_json = client.post(
        "/v1/score/batch", json={"items": [body(snap, cls, i) for i in range(n)]}
    ).json()["results"]
    for a, b in zip(arrow, as_json, strict=True):
        assert math.isclose(a["rul_hours"], b["rul_hours"], abs_tol=1e-3)
    bad = client.post(
        "/v1/score/batch",
        content=b"nope",
        headers={"content-type": "application/vnd.apache.arrow.stream"},
    )
    assert bad.status_code == 422


def test_feedback_is_accepted_and_checked(service: dict[str, Any]) -> None:
    client = service["client"]
    ok = {"pump_id": "esp-1", "pump_class": "esp", "failed_at": time.time()}
    assert client.post("/v1/feedback", json=ok).json() == {"accepted": 1}
    r = client.post("/v1/feedback", json={"pump_id": "esp-1", "pump_class": "esp"})
    assert r.status_code == 422 and "failed_at" in r.text
    r = client.post("/v1/feedback", json={**ok, "rul_hours": -1})
    assert r.status_code == 422 and "rul_hours" in r.text


def test_split_and_shadow_change_live_and_reload_swaps_versions(service: dict[str, Any]) -> None:
    s, snap, client = service["settings"], service["snapshot"], service["client"]
    cls = service["served"][0]
    admin = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    reg = Registry(s.tracking_uri)
    has_challenger = reg.version_by_alias(model_name(cls), "challenger") is not None
    r = client.post(
        "/v1/admin/split", json={"pump_class": cls, "challenger_weight": 0.0}, headers=admin
    )
    assert r.status_code == 200 and r.json()[cls]["challenger_weight"] == 0.0
    arms = {client.post("/v1/score", json=body(snap, cls, i)).json()["arm"] for i in range(10)}
    assert arms == {"champion"}
    # shadow: the champion answers, the challenger's score is logged beside it
    before = len(read_log(str(s.predictions_dir)))
    client.post("/v1/admin/split", json={"pump_class": cls, "shadow": True}, headers=admin)
    for i in range(5):
        assert client.post("/v1/score", json=body(snap, cls, i)).json()["arm"] == "champion"

    def shadowed() -> int:
        logged = read_log(str(s.predictions_dir))
        return int(logged["shadow_version"].notna().sum()) if len(logged) > before else 0

    deadline = time.monotonic() + 20
    while has_challenger and shadowed() < 5 and time.monotonic() < deadline:
        time.sleep(0.3)
    if has_challenger:
        assert shadowed() >= 5
    client.post(
        "/v1/admin/split",
        json={"pump_class": cls, "shadow": False, "challenger_weight": WEIGHT},
        headers=admin,
    )
    assert client.get("/v1/models").json()["classes"][cls]["shadow"] is False
    # a promotion in the registry is picked up by reload, with no failed request
    champion = reg.version_by_alias(model_name(cls), CHAMPION)
    versions = sorted(reg.versions(model_name(cls)), key=int)
    other = next(v for v in reversed(versions) if v != champion) if len(versions) > 1 else champion
    reg.set_alias(model_name(cls), CHAMPION, other)
    try:
        reloaded = client.post("/v1/admin/reload", headers=admin).json()
        assert reloaded["classes"][cls]["champion"] == other
        assert client.post("/v1/score", json=body(snap, cls)).status_code == 200
    finally:
        reg.set_alias(model_name(cls), CHAMPION, champion)
        client.post("/v1/admin/reload", headers=admin)
