"""One demo run per test session, shared by the demo's own checks (test_demo.py) and by the
commands of the README and the docs (test_docs.py), which run against its workspace."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from pumpfleet.settings import Settings


@dataclass(frozen=True)
class DemoRun:
    """What `run_demo` returned, and the workspace it filled."""

    settings: Settings
    result: dict[str, Any]


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory, ray_session: Any) -> DemoRun:
    """The demo loop on a small fleet (about 2 minutes on 2 cores), once per session."""
    from pumpfleet_cli.demo import DemoConfig, run_demo

    settings = Settings(home=tmp_path_factory.mktemp("demo") / "ws")
    cfg = DemoConfig(pumps=32, days=45, requests_per_class=100, epochs=8)
    return DemoRun(settings=settings, result=run_demo(settings, cfg))
