"""The alert rules in cluster/prometheus/ pass ``promtool check rules`` and their unit tests
(``promtool test rules``: for each rule, series that raise it and series that do not);
and those tests catch a broken rule. promtool comes with Debian's ``prometheus`` package
(``make system-deps``); without it these tests skip, and fail in CI."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "cluster" / "prometheus"
RULES = PROMETHEUS / "rules.yml"
TESTS = PROMETHEUS / "rules.test.yml"


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        why = "promtool is not installed (Debian's prometheus package: make system-deps)"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    return found


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=120, check=False
    )


def test_the_rules_are_valid(promtool: str) -> None:
    r = run(promtool, "check", "rules", RULES)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS: 10 rules found" in r.stdout


def test_every_rule_has_a_test_that_raises_it_and_one_that_does_not() -> None:
    rules = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    raised: set[str] = set()
    quiet: set[str] = set()
    for case in yaml.safe_load(TESTS.read_text())["tests"]:
        for t in case["alert_rule_test"]:
            (raised if t.get("exp_alerts") else quiet).add(t["alertname"])
    assert len(rules) == 10
    assert rules == raised == quiet


def test_the_rules_pass_their_unit_tests(promtool: str) -> None:
    r = run(promtool, "test", "rules", TESTS)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


@pytest.mark.parametrize(
    ("change", "alert"),
    [
        ("> 0.01", "PumpfleetHighErrorRate"),  # a threshold lost: fires where it must not
        ("max by (pump_class) (ray_pumpfleet_drift_alert) == 1", "PumpfleetDriftAlertOpen"),
    ],
)
def test_the_unit_tests_catch_a_broken_rule(
    promtool: str, tmp_path: Path, change: str, alert: str
) -> None:
    text = RULES.read_text()
    assert change in text
    broken = "> 0.5" if change == "> 0.01" else "sum(ray_pumpfleet_drift_alert) == 1"
    (tmp_path / "rules.yml").write_text(text.replace(change, broken, 1))
    shutil.copy(TESTS, tmp_path / "rules.test.yml")
    r = run(promtool, "test", "rules", tmp_path / "rules.test.yml")
    assert r.returncode == 1
    assert f"alertname: {alert}" in r.stdout + r.stderr
