"""The Grafana dashboard and the Prometheus rules under cluster/ query only metrics the
service exports, by the names Ray exports them under; and the drift gauge reads the
monitor's own report.

Ray 2.60's metrics agent exports a ``ray.util.metrics`` metric named ``x`` as ``ray_x``
(a gauge), ``ray_x_total`` (a counter) and ``ray_x_bucket`` / ``_count`` / ``_sum`` (a
histogram), with the metric's tag keys as labels plus its own (WorkerId, ...); Serve's
per-request metrics are taken from Serve's own metric objects.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pumpfleet.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
METRICS = ROOT / "serve_apps" / "metrics.py"
DASHBOARD = ROOT / "cluster" / "grafana" / "dashboards" / "pumpfleet.json"
PROVISIONING = ROOT / "cluster" / "grafana" / "provisioning"
RULES = ROOT / "cluster" / "prometheus" / "rules.yml"
SUFFIXES = {"Counter": ("_total",), "Gauge": ("",), "Histogram": ("_bucket", "_count", "_sum")}
# labels every exported series may carry besides its tag keys (Ray's metrics agent adds them)
RAY_LABELS = {"Component", "NodeAddress", "SessionName", "Version", "WorkerId", "instance", "job"}
NAME = re.compile(r"\b(?:ray_)?(?:pumpfleet|serve)_[a-z0-9_]+")
SELECTOR = re.compile(r"\b((?:ray_)?(?:pumpfleet|serve)_[a-z0-9_]+)\s*\{([^}]*)\}")
BY = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


def defined_metrics(source: str) -> dict[str, tuple[str, set[str]]]:
    """name -> (kind, tag keys) of every ``metrics.Counter/Gauge/Histogram(...)`` in a
    module's source."""
    out: dict[str, tuple[str, set[str]]] = {}
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        if node.func.attr not in SUFFIXES or not node.args:
            continue
        name = ast.literal_eval(node.args[0])
        tags = next((ast.literal_eval(k.value) for k in node.keywords if k.arg == "tag_keys"), ())
        out[name] = (node.func.attr, set(tags))
    return out


def serve_metrics() -> dict[str, tuple[str, set[str]]]:
    """Serve's per-request metrics as a replica records them under direct ingress, read
    from Serve's own metric objects (so an upgrade of Ray that renames one fails here)."""
    from ray.serve._private.common import RequestProtocol
    from ray.serve._private.request_ingress_metrics import RequestIngressMetrics

    m = RequestIngressMetrics(
        RequestProtocol.HTTP, source="ingress", node_id="n", node_ip_address=""
    )
    return {
        v._name: (type(v).__name__, set(v._tag_keys))
        for v in vars(m).values()
        if type(v).__name__ in SUFFIXES
    }


def exported(defined: dict[str, tuple[str, set[str]]]) -> dict[str, set[str]]:
    """Exported name -> the labels its series carry."""
    out: dict[str, set[str]] = {}
    for name, (kind, tags) in defined.items():
        for suffix in SUFFIXES[kind]:
            out[f"ray_{name}{suffix}"] = (
                tags | RAY_LABELS | ({"le"} if suffix == "_bucket" else set())
            )
    return out


def dashboard_queries(dash: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target and templating query."""

    def panels(ps: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for p in ps:
            yield p
            yield from panels(p.get("panels", []))

    for p in panels(dash["panels"]):
        for t in p.get("targets", []):
            yield f"panel {p['title']!r} {t['refId']}", t["expr"]
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            q = v["query"]
            yield f"variable {v['name']}", q["query"] if isinstance(q, dict) else q


def rule_queries() -> Iterator[tuple[str, str]]:
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            yield f"rule {rule.get('alert') or rule.get('record')}", rule["expr"]


def problems(queries: list[tuple[str, str]], names: dict[str, set[str]]) -> list[str]:
    """What in ``queries`` is not exported: an unknown metric name (a pumpfleet metric
    without Ray's prefix is one), a label a metric does not carry, a ``by`` label none
    of the expression's metrics carries."""
    out: list[str] = []
    for where, expr in queries:
        used = set(NAME.findall(expr))
        out += [f"{where}: {n} is not exported" for n in sorted(used - set(names))]
        for name, matchers in SELECTOR.findall(expr):
            for label in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", matchers):
                if name in names and label not in names[name]:
                    out.append(f"{where}: {name} has no label {label}")
        carried = set().union(*(names.get(n, set()) for n in used)) if used else set()
        for group in BY.findall(expr):
            for label in filter(None, (x.strip() for x in group.split(","))):
                if used and label not in carried:
                    out.append(f"{where}: by ({label}): no metric of it carries {label}")
    return out


@pytest.fixture(scope="module")
def names() -> dict[str, set[str]]:
    return exported(defined_metrics(METRICS.read_text()) | serve_metrics())


@pytest.fixture(scope="module")
def dash() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def test_the_exported_names_are_rays(names: dict[str, set[str]]) -> None:
    assert {"ray_pumpfleet_scoring_requests_total", "ray_pumpfleet_scoring_latency_ms_bucket",
            "ray_pumpfleet_scoring_latency_ms_count", "ray_pumpfleet_scoring_latency_ms_sum",
            "ray_pumpfleet_model_version", "ray_pumpfleet_drift_alert",
            "ray_pumpfleet_loop_errors_total", "ray_serve_num_http_requests_total",
            "ray_serve_http_request_latency_ms_bucket"} <= set(names)  # fmt: skip
    assert "pump_class" in names["ray_pumpfleet_drift_alert"]
    assert "status_code" in names["ray_serve_num_http_requests_total"]
    assert "ray_pumpfleet_scoring_requests" not in names  # a counter is exported with _total


def test_the_dashboard_is_a_provisionable_grafana_dashboard(dash: dict[str, Any]) -> None:
    assert dash["uid"] == "pumpfleet-ops" and dash["schemaVersion"] >= 36
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)) >= 15
    for p in dash["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, p["title"]
        if p["type"] != "row":
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
            assert p["targets"] and all(t["expr"].strip() for t in p["targets"]), p["title"]
    kinds = {v["name"]: v["type"] for v in dash["templating"]["list"]}
    assert kinds == {"datasource": "datasource", "pump_class": "query"}
    provider = yaml.safe_load((PROVISIONING / "dashboards" / "pumpfleet.yml").read_text())
    assert provider["apiVersion"] == 1 and provider["providers"][0]["type"] == "file"
    source = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    assert [d["type"] for d in source["datasources"]] == ["prometheus"]


def test_every_query_names_an_exported_metric_and_its_labels(
    dash: dict[str, Any], names: dict[str, set[str]]
) -> None:
    queries = [*dashboard_queries(dash), *rule_queries()]
    assert len(queries) >= 25
    assert problems(queries, names) == []


def test_every_metric_of_the_service_is_on_the_dashboard(
    dash: dict[str, Any], names: dict[str, set[str]]
) -> None:
    queried = {n for _, q in dashboard_queries(dash) for n in NAME.findall(q)}
    ours = {n for n in names if n.startswith("ray_pumpfleet_")}
    assert ours - queried == set()


def test_a_renamed_metric_or_label_fails_the_check(dash: dict[str, Any]) -> None:
    source = METRICS.read_text()
    renamed = source.replace('"pumpfleet_model_version"', '"pumpfleet_served_version"')
    assert renamed != source
    found = problems(list(dashboard_queries(dash)), exported(defined_metrics(renamed)))
    gone = "ray_pumpfleet_model_version is not exported"
    assert f"panel 'Served version per class and arm' A: {gone}" in found
    assert f"variable pump_class: {gone}" in found
    # without Ray's prefix, with a label the metric has not, by a label nobody carries
    bad = [
        ("q1", "pumpfleet_drift_alert == 1"),
        ("q2", 'ray_pumpfleet_drift_alert{arm="x"}'),
        ("q3", "max by (site) (ray_pumpfleet_drift_alert)"),
    ]
    assert problems(bad, exported(defined_metrics(source))) == [
        "q1: pumpfleet_drift_alert is not exported",
        "q2: ray_pumpfleet_drift_alert has no label arm",
        "q3: by (site): no metric of it carries site",
    ]  # fmt: skip


# --- the drift gauge's source: the monitor's latest report ----------------------------


def test_drift_status_follows_the_monitors_latest_report(settings: Settings) -> None:
    from pumpfleet.monitoring.run import write_reports
    from serve_apps.metrics import drift_status

    reports = settings.reports_uri
    # before the monitor's first report, every class served is 0
    assert drift_status(reports, ["esp", "rod"]) == {"esp": 0, "rod": 0}
    summary = {"created": "2026-02-01T00:00:00Z", "classes": {"esp": {}, "pcp": {}},
               "alerting_classes": ["esp"], "drifted_classes": ["esp", "pcp"]}  # fmt: skip
    write_reports(settings, summary, {}, None)  # the monitor's own writer
    # open: esp; drifted once but closed: pcp; served, not analysed: rod
    assert drift_status(reports, ["esp", "rod"]) == {"esp": 1, "pcp": 0, "rod": 0}
    write_reports(settings, {**summary, "alerting_classes": []}, {}, None)
    assert drift_status(reports, ["esp", "rod"]) == {"esp": 0, "pcp": 0, "rod": 0}


def test_an_unreadable_report_keeps_the_last_status(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    from serve_apps.metrics import DRIFT_REPORT, drift_status

    where = Path(settings.reports_uri)
    where.mkdir(parents=True)
    (where / DRIFT_REPORT).write_text("{not json")
    assert drift_status(str(where), ["esp"]) is None
    assert "cannot be read" in caplog.records[-1].message
    (where / DRIFT_REPORT).write_text("[1, 2]")
    assert drift_status(str(where), ["esp"]) is None
    assert caplog.records[-1].message.endswith("is not a JSON object")
