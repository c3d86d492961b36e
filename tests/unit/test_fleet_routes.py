"""The crews' routes of the scoring service (serve_apps/fleet_routes.py) through its
real app and doors on a loopback socket (no Ray), on SQLite and PostgreSQL: windows
scored by the service and an edge device's upload feed the fleet state off the request
path; the work list, a pump's history, the alerts and a crew's actions on them; feedback
marks the alert; validation (4xx naming the field), 404 and 409; the gauges' counts."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from pumpfleet import devices
from pumpfleet import fleet_views as views
from pumpfleet.routing import Arm
from serve_apps.model_set import ServedClass, ServedModel
from serve_apps.schemas import FleetConfig
from serve_apps.security import digest
from tests.postgres_server import fleet_url, pg_server  # noqa: F401 (fixtures)
from tests.serve_inproc import InProcessService, config
from tests.unit.test_features import spec

KEY = "scoring-key-0123456789"
W = 4
SPEC = spec(window=W)


def run(x: np.ndarray) -> np.ndarray:
    """Risk rises with the window's standardised motor temperature (a missing channel
    reads as its mean: risk 0.5), RUL falls with it."""
    temp = np.nan_to_num(np.asarray(x, dtype=np.float64)[:, :, 0]).mean(axis=1)
    risk = np.clip(0.5 + temp / 4, 0.0, 1.0)
    return np.stack([1.0 - risk, risk], axis=1).astype(np.float32)


@pytest.fixture
def cloud(tmp_path: Path, fleet_url: str) -> Iterator[InProcessService]:  # noqa: F811
    served = ServedClass({Arm.CHAMPION: ServedModel("4", SPEC, run)}, weight=0.0)
    cfg = config(
        tmp_path,
        api_key_sha256=[digest(KEY)],
        fleet=FleetConfig(db_url=fleet_url, open_after=2, device_stale_seconds=600),
    )
    service = InProcessService(cfg, {"esp": served})
    assert service.scorer.fleet_hub() is not None  # as the replica opens it when it starts
    yield service
    service.close()


def client(service: InProcessService) -> httpx.Client:
    return httpx.Client(base_url=service.url, headers={"x-api-key": KEY}, timeout=30)


def drained(service: InProcessService) -> None:
    hub = service.scorer.fleet_hub()
    assert hub is not None and hub.feed.drain()


def score(c: httpx.Client, pump: str, temp: float) -> dict[str, Any]:
    body = {"pump_id": pump, "pump_class": "esp",
            "readings": {"motor_temp": [temp] * W, "flow": [1000.0] * W}}  # fmt: skip
    r = c.post("/v1/score", json=body)
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_scored_windows_make_the_ranked_work_list_and_open_an_alert(
    cloud: InProcessService,
) -> None:
    with client(cloud) as c:
        for temp in (90.0, 100.0, 100.0):
            score(c, "esp-1", temp)
        score(c, "esp-2", 70.0)  # risk 0.25
        drained(cloud)
        fleet = c.get("/v1/fleet").json()
        assert fleet["total"] == 2
        top, low = fleet["pumps"]
        assert (top["pump_id"], top["failure_probability"], top["model_version"], top["arm"]) == (
            "esp-1", 1.0, "4", "champion")  # fmt: skip
        assert top["stale"] is False and top["last_reading_at"].endswith("Z")
        # occlusion: the motor temperature drives the risk (the flow does not)
        assert [d["sensor"] for d in top["drivers"]] == ["motor_temp"]
        assert top["drivers"][0]["weight"] == pytest.approx(0.5)
        assert top["open_alert"]["status"] == "open" and low["open_alert"] is None
        assert (low["pump_id"], low["failure_probability"], low["drivers"]) == ("esp-2", 0.25, [])
        assert c.get("/v1/fleet", params={"min_risk": 0.5}).json()["total"] == 1
        page = c.get("/v1/fleet", params={"limit": 1, "offset": 1}).json()
        assert (page["total"], [p["pump_id"] for p in page["pumps"]]) == (2, ["esp-2"])
        pump = c.get("/v1/fleet/esp-1").json()
        assert [s["failure_probability"] for s in pump["scores"]] == [0.75, 1.0, 1.0]
        assert [s["failure_probability"] for s in c.get(
            "/v1/fleet/esp-1", params={"limit": 2}).json()["scores"]] == [1.0, 1.0]  # fmt: skip
        assert [a["status"] for a in pump["alerts"]] == ["open"]
        alerts = c.get("/v1/alerts", params={"status": "open"}).json()
        assert alerts["total"] == 1
        alert = alerts["alerts"][0]
        assert (alert["pump_id"], alert["pump_class"], alert["horizon_hours"]) == (
            "esp-1", "esp", 24.0)  # fmt: skip
        assert [h["event"] for h in alert["history"]] == ["opened", "escalated"]
        hub = cloud.scorer.fleet_hub()
        assert hub is not None
        assert views.open_alerts_by(hub.db.engine) == {("esp", ""): 1}
        assert views.stale_pumps(hub.db.engine, time.time(), 3600) == 0


def test_a_crew_acknowledges_assigns_and_closes_and_illegal_steps_are_409(
    cloud: InProcessService,
) -> None:
    with client(cloud) as c:
        for _ in range(2):
            score(c, "esp-1", 100.0)
        drained(cloud)
        (alert,) = c.get("/v1/alerts").json()["alerts"]
        url = f"/v1/alerts/{alert['id']}"
        acked = c.post(f"{url}/ack", json={"by": "maria"})
        assert acked.status_code == 200 and acked.json()["status"] == "acknowledged"
        again = c.post(f"{url}/ack", json={"by": "maria"})
        assert again.status_code == 409 and "acknowledged" in again.json()["detail"]
        assigned = c.post(f"{url}/assign", json={"by": "maria", "assignee": "crew-3"}).json()
        assert (assigned["status"], assigned["assignee"]) == ("assigned", "crew-3")
        listed = c.get("/v1/fleet").json()["pumps"][0]["open_alert"]
        assert (listed["status"], listed["assignee"]) == ("assigned", "crew-3")
        closed = c.post(f"{url}/close", json={"by": "crew-3", "note": "bearing replaced"})
        assert closed.status_code == 200
        assert [(h["event"], h["by"], h["note"]) for h in closed.json()["history"][1:]] == [
            ("acknowledged", "maria", None), ("assigned", "maria", "to crew-3"),
            ("closed", "crew-3", "bearing replaced")]  # fmt: skip
        assert c.post(f"{url}/close", json={"by": "x", "note": "again"}).status_code == 409
        assert c.post("/v1/alerts/999/ack", json={"by": "maria"}).status_code == 404
        assert c.get("/v1/fleet/esp-9").status_code == 404


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("GET", "/v1/fleet?min_risk=2", None, "min_risk"),
        ("GET", "/v1/fleet?limit=0", None, "limit"),
        ("GET", "/v1/fleet?limit=501", None, "limit"),
        ("GET", "/v1/fleet?site=../x", None, "site"),
        ("GET", "/v1/fleet?stale=perhaps", None, "stale"),
        ("GET", "/v1/fleet/esp-1?limit=99999", None, "limit"),
        ("GET", "/v1/alerts?status=done", None, "status"),
        ("POST", "/v1/alerts/1/ack", {}, "by"),
        ("POST", "/v1/alerts/1/ack", {"by": "m", "extra": 1}, "extra"),
        ("POST", "/v1/alerts/1/assign", {"by": "m"}, "assignee"),
        ("POST", "/v1/alerts/1/close", {"by": "m"}, "note"),
        ("POST", "/v1/alerts/1/close", {"by": "m", "note": "n", "outcome": "meh"}, "outcome"),
        ("POST", "/v1/alerts/0/ack", {"by": "m"}, "alert_id"),
        ("POST", "/v1/alerts/x/ack", {"by": "m"}, "alert_id"),
    ],
)
def test_bad_input_is_a_4xx_naming_the_field(
    cloud: InProcessService, method: str, path: str, body: Any, field: str
) -> None:
    with client(cloud) as c:
        r = c.request(method, path, json=body)
    assert r.status_code == 422, r.text
    assert field in r.text


def test_the_routes_need_the_scoring_key(cloud: InProcessService) -> None:
    with httpx.Client(base_url=cloud.url, timeout=30) as c:
        assert c.get("/v1/fleet").status_code == 401
        assert c.post("/v1/alerts/1/ack", json={"by": "m"}).status_code == 401
        assert c.get("/v1/fleet", headers={"x-api-key": "wrong-key-0123456789"}).status_code == 401
    spec = cloud.app.openapi()
    paths = spec["paths"]
    answer = paths["/v1/fleet"]["get"]["responses"]["200"]["content"]["application/json"]
    assert answer["schema"] == {"$ref": "#/components/schemas/FleetPage"}
    pump = spec["components"]["schemas"]["Pump"]["properties"]
    assert {"drivers", "stale", "open_alert", "failure_probability"} <= set(pump)
    assert {"/v1/fleet", "/v1/fleet/{pump_id}", "/v1/alerts",
            "/v1/alerts/{alert_id}/close"} <= set(paths)  # fmt: skip


def test_feedback_marks_the_alert_a_hit_with_its_lead_time(cloud: InProcessService) -> None:
    with client(cloud) as c:
        for _ in range(2):
            score(c, "esp-1", 100.0)
        score(c, "esp-2", 70.0)  # a pump that raises no alert
        drained(cloud)
        assert c.get("/v1/alerts").json()["total"] == 1
        failed_at = time.time() + 6 * 3600
        r = c.post("/v1/feedback", json={"pump_id": "esp-1", "pump_class": "esp",
                                         "failed_at": failed_at})  # fmt: skip
        assert r.status_code == 200
        r = c.post("/v1/feedback", json={"pump_id": "esp-2", "pump_class": "esp",
                                         "maintained_at": failed_at})  # fmt: skip
        assert r.status_code == 200
        drained(cloud)
        (marked,) = c.get("/v1/alerts").json()["alerts"]
        assert (marked["status"], marked["outcome"]) == ("closed", "hit")
        assert marked["lead_time_hours"] == pytest.approx(6.0, abs=0.05)
        assert marked["history"][-1]["event"] == "failure"
        bad = c.post("/v1/feedback", json={"pump_id": "esp-1", "pump_class": "esp"})
        assert bad.status_code == 422 and "failed_at" in bad.text


def test_feedback_must_name_a_pump_of_the_fleet_as_its_class(cloud: InProcessService) -> None:
    """A mistyped pump id would mark no alert and count for no model: 404 naming it. A pump
    scored a moment ago (its rows still in the feed) is known already."""
    with client(cloud) as c:
        score(c, "esp-7", 80.0)  # not drained: the feedback waits for the feed
        at = time.time()
        ok = c.post("/v1/feedback", json={"pump_id": "esp-7", "pump_class": "esp",
                                          "failed_at": at})  # fmt: skip
        assert (ok.status_code, ok.json()) == (200, {"accepted": 1})
        typo = c.post("/v1/feedback", json={"pump_id": "esp-07", "pump_class": "esp",
                                            "failed_at": at})  # fmt: skip
        assert typo.status_code == 404
        assert typo.json()["detail"] == (
            "pump_id 'esp-07': no such pump in the fleet (never scored or uploaded)"
        )
        wrong = c.post("/v1/feedback", json={"pump_id": "esp-7", "pump_class": "rod",
                                             "rul_hours": 3.0})  # fmt: skip
        assert wrong.status_code == 422
        assert wrong.json()["detail"][0]["loc"][-1] == "pump_class"
        assert "is esp, not rod" in wrong.json()["detail"][0]["msg"]


def test_an_edge_upload_feeds_the_state_with_its_site_device_and_drivers(
    cloud: InProcessService,
) -> None:
    log_root = Path(cloud.scorer.config.predictions_dir)
    token = devices.issue(str(log_root.parent / devices.FILE), "rig-7")
    cloud.reload_devices()
    now_ns = time.time_ns()
    records = [
        {"request_id": f"r{k}", "timestamp": now_ns - (3 - k) * 10**9, "pump_id": "esp-7",
         "pump_class": "esp", "model_version": "4", "rul_hours": 10.0,
         "failure_probability": 0.9, "alert": True,
         "explanation": {"top": ["flow"], "risk_by_channel": {"flow": 0.4, "motor_temp": -0.1},
                         "rul_hours_by_channel": {"flow": -3.0, "motor_temp": 1.0},
                         "top_blocks": [], "block_steps": 1, "ms": 2.0}}
        for k in range(3)
    ]  # fmt: skip
    body = {"device_id": "rig-7", "batch_key": "b1", "records": records,
            "health": {"site": "north-field"}}  # fmt: skip
    with httpx.Client(base_url=cloud.url, timeout=30) as c:
        r = c.post("/v1/edge/upload", json=body, headers={"x-api-key": token})
        assert r.status_code == 200, r.text
        again = c.post("/v1/edge/upload", json=body, headers={"x-api-key": token})
        assert again.json()["duplicate"] is True
    drained(cloud)
    with client(cloud) as c:
        (pump,) = c.get("/v1/fleet", params={"site": "north-field"}).json()["pumps"]
    assert (pump["pump_id"], pump["device_id"], pump["arm"]) == ("esp-7", "rig-7", "edge")
    assert pump["drivers"] == [{"sensor": "flow", "weight": 0.4}]
    assert pump["open_alert"]["status"] == "open"
    hub = cloud.scorer.fleet_hub()
    assert hub is not None
    assert views.devices_online(hub.db.engine, time.time(), 600) == 1
    with hub.db.engine.connect() as conn:
        import sqlalchemy as sa

        n = conn.execute(sa.text("SELECT count(*) FROM fleet_scores")).scalar_one()
    assert n == 3  # the duplicate batch was not fed twice


def test_fuzzing_the_fleet_routes_gets_no_5xx(cloud: InProcessService) -> None:
    """Requests generated from the service's OpenAPI for the fleet routes (valid and
    invalid), with the scoring key, on a fleet with an alert: never a 5xx."""
    import requests
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis import GenerationMode

    with client(cloud) as c:
        for _ in range(2):
            score(c, "esp-1", 100.0)
        drained(cloud)
        schema = schemathesis.openapi.from_dict(c.get("/openapi.json").json())
    sent: list[tuple[str, int, str]] = []
    session = requests.Session()
    for result in schema.get_all_operations():
        op = result.ok()
        if not op.path.startswith(("/v1/fleet", "/v1/alerts")):
            continue
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(
                max_examples=25, deadline=None, database=None, derandomize=True,
                suppress_health_check=list(HealthCheck),
            )  # fmt: skip
            @given(case=op.as_strategy(generation_mode=mode))
            def call(case: Any) -> None:
                r = case.call(base_url=cloud.url, session=session, headers={"x-api-key": KEY})
                sent.append((case.operation.label, r.status_code, r.text[:200]))

            try:
                call()
            except Exception as e:  # an operation with no invalid input to generate
                if type(e).__name__ != "Unsatisfiable":
                    raise
    five = [x for x in sent if x[1] >= 500]
    assert len(sent) >= 150 and five == [], (len(sent), five[:10])
    assert {x[0] for x in sent} >= {"GET /v1/fleet", "POST /v1/alerts/{alert_id}/close"}
