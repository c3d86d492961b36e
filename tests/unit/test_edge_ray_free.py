"""The edge agent's unit tests pass in an interpreter where Ray cannot be imported
(tests/conftest.py blocks it when PUMPFLEET_TEST_BLOCK_IMPORTS names it), and Ray is
never loaded during that run."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import BLOCK_IMPORTS, EDGE_TESTS, BlockImports

ROOT = Path(__file__).resolve().parents[2]

# pytest in-process, then what the interpreter holds afterwards: the run's exit code,
# the outcome of every test, every ray module loaded at any point, and what `import ray`
# does once the run is over.
RUN = """
import json, sys
import pytest

class Outcomes:
    def __init__(self):
        self.by_test = {}
    def pytest_runtest_logreport(self, report):
        if report.skipped:
            self.by_test[report.nodeid] = "skipped: " + str(report.longrepr[-1])
        elif report.when == "call" or report.failed:
            self.by_test[report.nodeid] = report.outcome

outcomes = Outcomes()
rc = pytest.main(["-q", "-p", "no:cacheprovider", *sys.argv[1:]], plugins=[outcomes])
try:
    import ray
    ray_import = "imported " + ray.__file__
except ModuleNotFoundError as e:
    ray_import = str(e)
loaded = sorted(m for m in sys.modules if m.partition(".")[0] == "ray")
print("RESULT " + json.dumps(
    {"rc": int(rc), "outcomes": outcomes.by_test, "ray_import": ray_import, "loaded": loaded}
))
"""


def test_blocker_makes_a_package_import_as_if_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("xml", "xml.dom"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    finder = BlockImports({"xml"})
    monkeypatch.setattr(sys, "meta_path", [finder, *sys.meta_path])
    with pytest.raises(ModuleNotFoundError, match=f"^xml is blocked by {BLOCK_IMPORTS}$"):
        importlib.import_module("xml.dom")
    assert finder.find_spec("xmlrpc") is None  # a prefix is not the package


@pytest.mark.slow
def test_edge_unit_tests_pass_with_ray_blocked() -> None:
    env = {**os.environ, BLOCK_IMPORTS: "ray"}
    done = subprocess.run(
        [sys.executable, "-c", RUN, *EDGE_TESTS],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    assert len(lines) == 1, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(lines[0].removeprefix("RESULT "))
    assert result["ray_import"] == f"ray is blocked by {BLOCK_IMPORTS}"
    assert result["loaded"] == []
    # Nothing failed, and nothing skipped for want of Ray.
    failed = {
        t: o
        for t, o in result["outcomes"].items()
        if o != "passed" and not (o.startswith("skipped: ") and "ray" not in o.lower())
    }
    assert failed == {}, (
        f"edge unit tests that did not pass with Ray blocked: {sorted(failed)}\n"
        + done.stdout[-3000:]
    )
    assert result["rc"] == 0, done.stdout[-3000:]
    files = {t.partition("::")[0] for t in result["outcomes"]}
    assert files == set(EDGE_TESTS)
