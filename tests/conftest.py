"""Shared test setup: telemetry off, small fleets, a free loopback port."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from pumpfleet.settings import TELEMETRY_OFF, Settings

for _k, _v in TELEMETRY_OFF.items():
    os.environ.setdefault(_k, _v)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings on a fresh workspace under the test's temp folder."""
    return Settings(home=tmp_path / "ws")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def ray_session() -> object:
    """One local Ray for the whole test session (integration and e2e)."""
    import ray

    # Serve as `pumpfleet serve` runs it, with no load balancer to drain for
    # (serve_apps/run.py: LOCAL_SERVE_ENV), set before Ray starts its processes.
    from serve_apps.run import use_serve_env

    use_serve_env(local=True)
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        _node_ip_address="127.0.0.1",
    )
    yield ray
    ray.shutdown()
