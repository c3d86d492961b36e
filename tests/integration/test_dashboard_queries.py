"""The dashboard's and the rules' queries against what Ray really exports: a Ray actor
records the service's metrics through serve_apps.metrics, a Prometheus server (Debian's
``prometheus``, on 127.0.0.1, stopped by its PID) scrapes the node's metrics port with
the alert rules loaded, and every dashboard query on the service's own metrics returns
series. Serve's request metrics need the service itself (tests/integration/test_serve.py
scrapes them); their names are checked in tests/unit/test_dashboard.py."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import free_port
from tests.unit.test_dashboard import DASHBOARD, RULES, dashboard_queries

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        why = "the prometheus server is not installed (Debian's prometheus: make system-deps)"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    return found


def record_metrics(reports: str) -> None:
    """What a replica records: windows scored and refused, a loop error, the versions
    served and the drift status, and the fleet's figures."""
    from serve_apps import metrics
    from serve_apps.model_set import Arm, ServedClass, ServedModel

    for arm in ("champion", "challenger"):
        metrics.scored("esp", arm, 4, 3.0)
    metrics.flush()  # as the replica's flush loop does
    metrics.rejected()
    metrics.loop_failed("refresh")
    arms = {
        Arm.CHAMPION: ServedModel("3", None, None),  # type: ignore[arg-type]
        Arm.CHALLENGER: ServedModel("4", None, None),  # type: ignore[arg-type]
    }
    metrics.serving({"esp": ServedClass(arms, 0.1)}, reports)
    metrics.fleet_gauges({("esp", "north"): 2}, 1, 5)
    metrics.fleet_dropped(3)


@pytest.fixture(scope="module")
def prometheus(
    ray_session: Any, prometheus_binary: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    import ray

    tmp = tmp_path_factory.mktemp("prometheus")
    reports = tmp / "reports"
    reports.mkdir()
    (reports / "drift-latest.json").write_text(json.dumps({"alerting_classes": ["esp"]}))

    @ray.remote(num_cpus=0)
    class Replica:
        def record(self, reports: str) -> None:
            record_metrics(reports)

    replica = Replica.remote()  # type: ignore[attr-defined]
    ray.get(replica.record.remote(str(reports)))
    port = ray._private.worker.global_worker.node.metrics_export_port
    config = tmp / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: [{json.dumps(str(RULES))}]\n"
        "scrape_configs:\n"
        f"  - job_name: ray\n    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n"
    )
    web = free_port()
    log = (tmp / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [prometheus_binary, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'data'}",
         f"--web.listen-address=127.0.0.1:{web}", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{web}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        ray.get(replica.record.remote(str(reports)))  # a second sample of every counter
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
        ray.kill(replica)


def grafana(q: str) -> str:
    """A Grafana query as PromQL: its variables filled in, label_values(m, l) as m."""
    q = q.replace("$__rate_interval", "1m").replace("$pump_class", ".*")
    return re.sub(r"^label_values\((.+),\s*\w+\)$", r"\1", q)


def instant(url: str, expr: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10)
    assert r.status_code == 200, r.text
    return list(r.json()["data"]["result"])


def settled(url: str, expr: str, read: Callable[[list[dict[str, Any]]], Any], want: Any) -> Any:
    """What ``read`` makes of ``expr``'s answer once it is ``want``, else after 60 s. A
    scrape that times out on a loaded machine (1 s here) marks every series of the node
    stale until the next one: an instant query between the two finds none."""
    deadline = time.monotonic() + 60
    got = read(instant(url, expr))
    while got != want and time.monotonic() < deadline:
        time.sleep(1)
        got = read(instant(url, expr))
    return got


def test_the_dashboard_queries_return_the_services_series(prometheus: str) -> None:
    queries = [
        (where, grafana(q))
        for where, q in dashboard_queries(json.loads(DASHBOARD.read_text()))
        if "ray_serve_" not in q and "ALERTS" not in q
    ]
    assert len(queries) >= 16
    empty = [w for w, _ in queries]
    deadline = time.monotonic() + 120
    while empty and time.monotonic() < deadline:
        empty = [w for w, q in queries if not instant(prometheus, q)]
        time.sleep(2)
    assert empty == []
    versions = settled(
        prometheus,
        "max by (pump_class, arm) (ray_pumpfleet_model_version)",
        lambda found: {(s["metric"]["arm"], s["value"][1]) for s in found},
        {("champion", "3"), ("challenger", "4")},
    )
    assert versions == {("champion", "3"), ("challenger", "4")}
    drift = settled(
        prometheus,
        "max by (pump_class) (ray_pumpfleet_drift_alert)",
        lambda found: [(s["metric"]["pump_class"], s["value"][1]) for s in found],
        [("esp", "1")],
    )
    assert drift == [("esp", "1")]


def test_the_rules_load_and_the_drift_alert_fires(prometheus: str) -> None:
    deadline = time.monotonic() + 60
    firing: list[str] = []
    while time.monotonic() < deadline:
        groups = httpx.get(f"{prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        assert len(rules) == 10 and all(r["health"] != "err" for r in rules), rules
        firing = [a["labels"]["alertname"] for r in rules for a in r["alerts"]
                  if a["state"] == "firing"]  # fmt: skip
        if "PumpfleetDriftAlertOpen" in firing:
            break
        time.sleep(2)
    assert "PumpfleetDriftAlertOpen" in firing
