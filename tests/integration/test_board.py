"""The fleet board (issue 20, item 5) in a real browser: Playwright driving Debian's
chromium (``make system-deps``) against the scoring service's real app and doors on a
loopback socket (tests/serve_inproc.py), over a fleet state filled by the fleet
database's own writer. The crew's path: log in with the key, filter the work list by
site, open the riskiest pump, acknowledge and assign its alert; each change is then
checked through the API. Screenshots go to ``$PUMPFLEET_TEST_ARTEFACTS`` (else
``build/test-artefacts/``); docs/img/board-*.png are copies of them.

Without a browser only the assets' tests run here (what is served, with which headers,
and nothing else); the browser test skips saying why, and fails instead under CI."""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from serve_apps import board_routes
from serve_apps.security import digest
from tests.serve_inproc import InProcessService, config, served_app

KEY = "board-scoring-key-0123456789"
REPO = Path(__file__).resolve().parents[2]
INSTALL = "chromium is not installed (make system-deps, or apt-get install chromium)"
HOUR = 3600.0
NOTE = 'bearing replaced <img src=x onerror="document.title=1">'


def artefacts() -> Path:
    folder = Path(os.environ.get("PUMPFLEET_TEST_ARTEFACTS") or REPO / "build" / "test-artefacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def unavailable(reason: str) -> None:
    """Skip with ``reason``; fail under CI, which must have a browser."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must run the browser test")
    pytest.skip(reason)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[InProcessService]:
    home = tmp_path / "ws"
    home.mkdir()
    svc = InProcessService(config(home, api_key_sha256=[digest(KEY)], workspace=str(home)))
    yield svc
    svc.close()


# --- the assets: no browser needed --------------------------------------------------


def test_the_board_and_its_assets_are_served_open_with_a_strict_policy(
    service: InProcessService,
) -> None:
    with httpx.Client(base_url=service.url, timeout=30) as client:
        page = client.get("/board")
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        for name in set(board_routes.ASSETS) - {"index.html"}:
            assert f'"board/{name}"' in page.text  # relative: the board works under a prefix
        assert "<script>" not in page.text and " style=" not in page.text  # nothing inline
        policy = page.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "default-src 'none'" in policy
        assert "unsafe-inline" not in policy and "http" not in policy
        assert page.headers["x-content-type-options"] == "nosniff"
        scripts = ["charts.js", "common.js", "lists.js", "pump.js", "board.js"]
        for name, media in [(n, "text/javascript; charset=utf-8") for n in scripts] + [
            ("board.css", "text/css; charset=utf-8")
        ]:
            got = client.get(f"/board/{name}")
            assert (got.status_code, got.headers["content-type"]) == (200, media)
            assert got.content == board_routes.asset_bytes(name)
            assert got.headers["content-security-policy"] == policy
    # every asset is package data: no page refers to a file the package lacks
    packaged = {p.name for p in (REPO / "serve_apps" / "board").iterdir()}
    assert packaged == set(board_routes.ASSETS)


@pytest.mark.parametrize(
    "path",
    [
        "/board/scoring.py",
        "/board/..%2Fscoring.py",
        "/board/%2e%2e%2fdoors.py",
        "/board/../http_app.py",
        "/board/board.js%00.css",
        "/board/board/board.js",
        "/board/BOARD.JS",
    ],
)
def test_nothing_but_the_known_assets_is_served(service: InProcessService, path: str) -> None:
    with httpx.Client(base_url=service.url, timeout=30) as client:
        got = client.get(path)
    assert got.status_code == 404, (path, got.text[:200])
    assert "import" not in got.text  # no Python source, whatever the path


def test_the_drift_route_needs_the_key_and_reads_the_monitors_latest_report(
    service: InProcessService,
) -> None:
    from pumpfleet.monitoring.run import write_reports
    from pumpfleet.settings import Settings

    with httpx.Client(base_url=service.url, timeout=30) as client:
        assert client.get("/v1/drift").status_code == 401
        none = client.get("/v1/drift", headers={"x-api-key": KEY}).json()
        assert none == {
            "created": None,
            "classes": {},
            "skipped": {},
            "message": "no monitor report yet",
        }
        home = Path(service.scorer.config.workspace_dir())
        write_reports(Settings(home=home), drift_summary(), {}, None)
        got = client.get("/v1/drift", headers={"x-api-key": KEY}).json()
    assert got["created"] == "2026-12-06T06:00:00Z"
    assert got["classes"] == {
        "esp": {
            "drifted": True,
            "alert_active": True,
            "drifted_features": ["motor_temp", "vibration"],
            "health_alert_active": False,
            "champion": "3",
        },
        "rod": {
            "drifted": False,
            "alert_active": False,
            "drifted_features": [],
            "health_alert_active": False,
            "champion": "1",
        },
    }
    assert got["skipped"] == {"pcp": "12 predictions, fewer than a chunk (50)"}


def drift_summary() -> dict[str, Any]:
    """The monitor's summary, the part the board reads."""
    return {
        "created": "2026-12-06T06:00:00Z",
        "status": "ok",
        "classes": {
            "esp": {
                "champion": "3",
                "drifted": True,
                "alert_active": True,
                "drifted_features": ["motor_temp", "vibration"],
                "health": {"alert_active": False},
            },
            "rod": {
                "champion": "1",
                "drifted": False,
                "alert_active": False,
                "drifted_features": [],
                "health": None,
            },
        },
        "skipped": {"pcp": "12 predictions, fewer than a chunk (50)"},
    }


def test_a_pumps_sensor_readings_come_from_the_prediction_log_within_their_window(
    service: InProcessService,
) -> None:
    now = time.time()
    rows = fleet_rows(now)
    write_prediction_log(service.scorer.config.predictions_dir, rows)
    mine = sorted((r for r in rows if r.pump_id == "esp-d7-2"), key=lambda r: r.at)
    path = "/v1/fleet/esp-d7-2/sensors"
    with httpx.Client(base_url=service.url, timeout=30) as client:
        assert client.get(path, params={"pump_class": "esp"}).status_code == 401
        key = {"x-api-key": KEY}
        got = client.get(path, params={"pump_class": "esp"}, headers=key).json()
        assert got["channels"] == ["intake_pressure", "motor_temp", "vibration"]
        assert [r["vibration"] for r in got["readings"]] == [
            round(2.0 + 6.0 * r.failure_probability, 4) for r in mine
        ]  # this pump's 8 windows, oldest first; not the one ten days before
        assert got["unreadable_files"] == 0
        # the ten-day-old row is there for a window that holds it; limit keeps the latest
        old = client.get(
            path,
            params={"pump_class": "esp", "since": now - 11 * 24 * HOUR, "limit": 3},
            headers=key,
        ).json()
        assert len(old["readings"]) == 3
        assert old["readings"][-1]["vibration"] == round(
            2.0 + 6.0 * mine[-1].failure_probability, 4
        )
        wide = client.get(
            path, params={"pump_class": "esp", "since": now - 11 * 24 * HOUR}, headers=key
        ).json()
        assert len(wide["readings"]) == 9
        # another class's partition is not read; a backwards or too long span is a 422
        rod = client.get(path, params={"pump_class": "rod"}, headers=key).json()
        assert rod["readings"] == [] and rod["channels"] == []
        for params, msg in [
            ({"since": now, "until": now - 1}, "must not be after until"),
            ({"since": now - 40 * 24 * HOUR}, "at most 31 days before until"),
        ]:
            bad = client.get(path, params={"pump_class": "esp", **params}, headers=key)
            assert bad.status_code == 422
            assert bad.json()["detail"] == [
                {"loc": ["query", "since"], "msg": msg, "type": "value_error"}
            ]
        assert client.get(path, headers=key).status_code == 422  # pump_class is needed


# --- the browser ------------------------------------------------------------------

SITES = ["north-field", "delta-7", "offshore-b"]


def fleet_rows(now: float) -> list[Any]:
    """A small fleet: 4 pumps per site, 2 classes, 8 scored windows each (one an hour);
    the riskiest pump of the whole fleet is in north-field, the riskiest of delta-7 is
    esp-d7-2 (risk rising past its class's threshold, so its alert opens), and
    rod-ob-4 has been silent for two days (stale)."""
    from pumpfleet.fleet_store import ScoredRow

    peak = {"esp-nf-1": 0.97, "esp-d7-2": 0.88, "rod-d7-3": 0.35, "esp-ob-1": 0.61}
    rows = []
    for s, site in enumerate(SITES):
        tag = {"north-field": "nf", "delta-7": "d7", "offshore-b": "ob"}[site]
        for i in range(1, 5):
            cls = "esp" if i <= 2 else "rod"
            pump = f"{cls}-{tag}-{i}"
            top = peak.get(pump, 0.04 + 0.03 * i + 0.01 * s)
            last = now - (2 * 24 * HOUR if pump == "rod-ob-4" else 600.0)
            for k in range(8):
                fp = top * (0.35 + 0.65 * k / 7)
                rows.append(
                    ScoredRow(
                        pump_id=pump,
                        pump_class=cls,
                        at=last - (7 - k) * HOUR,
                        rul_hours=round(900 * (1 - fp) + 5, 1),
                        failure_probability=round(fp, 4),
                        model_version="3" if cls == "esp" else "1",
                        arm="challenger" if pump.endswith("-2") else "champion",
                        health_score=round(1.0 + 6 * fp, 3),
                        anomaly=fp > 0.8,
                        site=site,
                        device_id=f"rig-{tag}" if site == "offshore-b" else None,
                        drivers=[
                            {"sensor": "vibration", "weight": round(0.5 * fp, 4)},
                            {"sensor": "motor_temp", "weight": round(0.3 * fp, 4)},
                            {"sensor": "intake_pressure", "weight": round(0.1 * fp, 4)},
                        ],
                        threshold=0.5,
                        horizon_hours=72.0,
                    )
                )
    return rows


@pytest.fixture
def fleet(service: InProcessService) -> InProcessService:
    """The service over a fleet state written by the fleet database itself."""
    if "/v1/fleet" not in served_app().openapi()["paths"]:
        pytest.skip("the fleet routes (issue 20, items 1-3) are not mounted on the service yet")
    from pumpfleet.fleet_schema import default_url
    from pumpfleet.fleet_store import FleetDB
    from pumpfleet.monitoring.run import write_reports
    from pumpfleet.settings import Settings

    home = Path(service.scorer.config.workspace_dir())
    db = FleetDB(default_url(home))
    now = time.time()
    try:
        events = db.ingest(fleet_rows(now))
    finally:
        db.close()
    opened = [e for e in events if e[0] == "opened"]
    assert len(opened) == 3, events  # esp-nf-1, esp-d7-2, esp-ob-1 crossed 0.5 twice
    write_reports(Settings(home=home), drift_summary(), {}, None)
    write_prediction_log(service.scorer.config.predictions_dir, fleet_rows(now))
    return service


def write_prediction_log(root: str, rows: list[Any]) -> None:
    """The prediction log's rows of the cloud-scored pumps' windows, by the log's own
    writer: each window's channel means (in_*) rising with its risk; and one row of
    esp-d7-2 from ten days before, outside any window the board asks for."""
    from pumpfleet.predlog import PredictionLog

    def record(r: Any, at: float) -> dict[str, Any]:
        fp = r.failure_probability
        return {
            "request_id": f"{r.pump_id}-{at:.0f}",
            "timestamp": int(at * 1e9),
            "pump_id": r.pump_id,
            "pump_class": r.pump_class,
            "arm": r.arm,
            "model_version": r.model_version,
            "rul_hours": r.rul_hours,
            "failure_probability": fp,
            "in_vibration": round(2.0 + 6.0 * fp, 4),
            "in_motor_temp": round(80.0 + 30.0 * fp, 4),
            "in_intake_pressure": round(1500.0 - 400.0 * fp, 4),
        }

    cloud = [r for r in rows if r.device_id is None]
    log = PredictionLog(root)
    log.extend([record(r, r.at) for r in cloud])
    old = next(r for r in cloud if r.pump_id == "esp-d7-2")
    log.extend([record(old, old.at - 10 * 24 * HOUR)])
    assert log.flush() == len(cloud) + 1


@pytest.fixture
def browser() -> Iterator[Any]:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        unavailable(INSTALL)
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        unavailable("playwright is not installed (pip install -e '.[dev]')")
    with sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=binary, args=["--no-sandbox"])
        except Error as e:
            unavailable(f"chromium at {binary} cannot start: {str(e).splitlines()[0]}")
        try:
            yield b
        finally:
            b.close()


def test_a_crew_filters_by_site_opens_the_riskiest_pump_and_acknowledges_its_alert(
    fleet: InProcessService, browser: Any
) -> None:
    from playwright.sync_api import expect

    api = httpx.Client(base_url=fleet.url, headers={"x-api-key": KEY}, timeout=30)
    shots = artefacts()
    page = browser.new_page(viewport={"width": 1360, "height": 900})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.set_default_timeout(30_000)

    page.goto(f"{fleet.url}/board")
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    # a wrong key is refused with the service's own reason, and nothing is kept
    page.get_by_label("API key (a scoring key)").fill("not-the-key")
    page.get_by_label("Your name").fill("maria")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#login-error")).to_contain_text(
        "The API key was refused (HTTP 401): missing or invalid credentials"
    )
    assert page.evaluate("sessionStorage.getItem('pumpfleet.key')") is None
    problems.clear()  # the browser logs the refused request itself

    # by keyboard alone: the refused key is selected for typing again; Tab to the name
    # (kept), Enter
    assert page.evaluate("document.activeElement.id") == "login-key"
    page.keyboard.type(KEY)
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "login-name"
    page.keyboard.press("Enter")
    table = page.locator("#work-list")
    expect(table.locator("caption")).to_have_text("The work list: 12 pumps, riskiest first")
    expect(table.locator("tbody tr")).to_have_count(12)
    ranked = [p["pump_id"] for p in api.get("/v1/fleet").json()["pumps"]]
    assert ranked[0] == "esp-nf-1"
    assert table.locator("tbody tr th a").all_inner_texts() == ranked
    stale = table.locator("tr[data-pump='rod-ob-4'] .badge.stale")
    expect(stale).to_have_text("stale")
    page.screenshot(path=str(shots / "board-worklist.png"), full_page=True)

    # the per-site view: every pump a tile, coloured by its risk
    page.get_by_role("link", name="Sites", exact=True).click()
    expect(page.locator(".tile")).to_have_count(12)
    expect(page.locator(".tile.risk-high")).to_have_count(3)  # the three with open alerts
    # the sites with the riskiest pumps first
    heads = page.locator("section.site h3").all_inner_texts()
    assert [h.split()[0] for h in heads] == ["north-field", "delta-7", "offshore-b"]
    expect(page.locator("section.site", has_text="offshore-b").locator("h3")).to_contain_text(
        "4 pumps · 1 at high risk · 1 open alert · 1 stale"
    )
    expect(page.locator(".tile.is-stale")).to_have_text("rod-ob-418 %stale")
    page.screenshot(path=str(shots / "board-sites.png"), full_page=True)

    # filter the work list by site: only delta-7, riskiest first
    page.get_by_role("link", name="Work list", exact=True).click()
    expect(table.locator("caption")).to_have_text("The work list: 12 pumps, riskiest first")
    page.get_by_label("Site", exact=True).select_option("delta-7")
    page.get_by_role("button", name="Filter").click()
    expect(table.locator("caption")).to_have_text("The work list: 4 pumps, riskiest first")
    sites = table.locator("tbody tr td:nth-child(4)").all_inner_texts()
    assert sites == ["delta-7"] * 4
    expected = api.get("/v1/fleet", params={"site": "delta-7"}).json()["pumps"]
    top = expected[0]
    assert top["pump_id"] == "esp-d7-2" and top["open_alert"]["status"] == "open"
    assert table.locator("tbody tr th a").first.inner_text() == "esp-d7-2"
    expect(table.locator("tbody tr").first.locator(".alert-cell")).to_have_text("open")

    # the riskiest pump's page: its trend, drivers, model and its class's drift
    table.locator("tbody tr th a").first.click()
    expect(page.get_by_role("heading", name="Pump esp-d7-2", exact=False)).to_be_visible()
    detail = api.get("/v1/fleet/esp-d7-2").json()
    assert len(detail["scores"]) == 8 and len(detail["alerts"]) == 1
    alert_id = detail["alerts"][0]["id"]
    rul = page.locator("figure", has_text="Remaining useful life").locator("svg")
    expect(rul.locator("circle.dot")).to_have_count(8)
    expect(rul.locator("line.marker")).to_have_count(1)  # where the alert opened
    expect(page.locator("svg.bars rect.bar")).to_have_count(3)
    expect(page.locator("svg.bars")).to_have_attribute(
        "aria-label",
        "Drivers of the risk: vibration 0.440, motor_temp 0.264, intake_pressure 0.088",
    )
    # the sensors around the alert, from the prediction log: this pump's 8 windows only
    sensors = page.locator("section[aria-label='Sensors']")
    expect(sensors.locator("h3")).to_have_text("Sensors around the alert")
    expect(sensors.locator("figure")).to_have_count(3)
    expect(sensors.locator("figcaption")).to_have_text(
        ["intake_pressure", "motor_temp", "vibration"]
    )
    vibration = sensors.locator("figure", has_text="vibration").locator("svg")
    expect(vibration.locator("circle.dot")).to_have_count(8)
    expect(vibration.locator("line.marker")).to_have_count(1)
    expect(vibration).to_have_attribute("aria-label", re.compile(r"latest 7\.28\b"))
    facts = page.locator("section[aria-label='Class esp']")
    expect(facts).to_contain_text("drift alert open: motor_temp, vibration")
    expect(page.locator("section[aria-label='Pump']")).to_contain_text("v3 (challenger)")
    page.screenshot(path=str(shots / "board-pump.png"), full_page=True)

    # acknowledge, then assign: the page follows, and so does the API
    block = page.locator(f"section[data-alert='{alert_id}']")
    block.get_by_role("button", name="Acknowledge").click()
    expect(block.locator(".alert-status")).to_have_text("acknowledged")
    expect(page.locator("#status")).to_have_text(f"Alert {alert_id}: acknowledged.")
    expect(block.get_by_role("button", name="Acknowledge")).to_have_count(0)
    acked = api.get("/v1/alerts", params={"status": "acknowledged"}).json()
    assert [a["id"] for a in acked["alerts"]] == [alert_id]
    assert [(e["event"], e["by"]) for e in acked["alerts"][0]["history"]][-1] == (
        "acknowledged",
        "maria",
    )
    assert api.get("/v1/fleet/esp-d7-2").json()["pump"]["open_alert"]["status"] == "acknowledged"

    block.get_by_label("Assignee").fill("crew-3")
    block.get_by_role("button", name="Assign").click()
    expect(block.locator(".alert-status")).to_have_text("assigned")
    got = api.get("/v1/fleet/esp-d7-2").json()["pump"]["open_alert"]
    assert (got["status"], got["assignee"]) == ("assigned", "crew-3")
    page.screenshot(path=str(shots / "assigned-pump.png"), full_page=True)

    # closing without a note is refused on the page, before any request
    block.get_by_role("button", name="Close").click()
    expect(page.locator("#error")).to_have_text("Closing note: enter a value first.")
    assert api.get("/v1/fleet/esp-d7-2").json()["pump"]["open_alert"]["status"] == "assigned"
    assert problems == []  # no script error, no policy violation

    # another crew closes it meanwhile: this page's hand-over is refused with the
    # service's reason, and the page shows the alert as it stands
    closed = api.post(
        f"/v1/alerts/{alert_id}/close",
        json={"by": "crew-3", "note": NOTE, "outcome": "hit"},
    )
    assert closed.status_code == 200, closed.text
    block.get_by_label("Assignee").fill("crew-9")
    block.get_by_role("button", name="Assign").click()
    expect(page.locator("#error")).to_contain_text(
        f"Conflict (HTTP 409): alert {alert_id} is closed"
    )
    expect(block.locator(".alert-status")).to_have_text("closed")
    expect(block.get_by_role("button")).to_have_count(0)
    # a note is shown as the text it is, never read as markup
    expect(block.locator(".history li").last).to_contain_text(f"by crew-3: {NOTE}")
    expect(block.locator(".history img")).to_have_count(0)

    # a pump that is not there: the service's 404, said on the page
    page.goto(f"{fleet.url}/board#/pump/esp-zz-9")
    expect(page.locator("#error")).to_have_text(
        "Not found (HTTP 404): pump_id: no pump 'esp-zz-9' in the fleet state"
    )
    assert page.title() == "pumpfleet · fleet board"
    api.close()
