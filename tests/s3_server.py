"""A real S3 API server for tests: moto's server mode (``moto[server]``, the dev extra),
started on 127.0.0.1 at a free port and stopped by its PID. Clients are configured as on
AWS, by environment variables (``AWS_ENDPOINT_URL``, keys, region): :meth:`S3Server.env`.

Without ``moto_server`` a test that needs it is skipped, saying why; in CI (``CI`` set)
it fails instead.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port

MOTO = Path(sys.executable).parent / "moto_server"


def moto_server() -> str:
    """The moto_server executable; skips (fails in CI) when it is not installed."""
    found = str(MOTO) if MOTO.exists() else shutil.which("moto_server")
    if found is None:
        reason = "moto_server not installed: pip install 'moto[server]' (the dev extra)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return found


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    pid: int

    def env(self) -> dict[str, str]:
        """What an AWS tool is configured by: the endpoint, test keys and a region."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "pumpfleet-test",
            "AWS_SECRET_ACCESS_KEY": "pumpfleet-test-secret",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def create_bucket(self, name: str) -> None:
        """A bucket, as an operator makes one (`aws s3 mb`); pumpfleet never makes them."""
        import boto3

        env = self.env()
        boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=env["AWS_DEFAULT_REGION"],
        ).create_bucket(Bucket=name)


@contextlib.contextmanager
def s3_server() -> Iterator[S3Server]:
    """moto_server on 127.0.0.1, up until the block ends; then stopped by its PID."""
    exe = moto_server()
    port = free_port()
    log = Path(tempfile.mkdtemp(prefix="pf-moto-")) / "moto.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [exe, "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        _wait(endpoint, proc, log)
        yield S3Server(endpoint, proc.pid)
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        shutil.rmtree(log.parent, ignore_errors=True)


def _wait(endpoint: str, proc: subprocess.Popen[bytes], log: Path, seconds: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"moto_server exited ({proc.returncode}): {log.read_text()[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{endpoint}/moto-api/").status_code < 500:
                return
        time.sleep(0.3)
    pytest.fail(f"moto_server not up after {seconds:.0f} s: {log.read_text()[-2000:]}")


def use_s3(monkeypatch: pytest.MonkeyPatch, server: S3Server) -> None:
    """Configure this process's settings for ``server`` through the environment, as on
    AWS (the cached settings read again)."""
    from pumpfleet.settings import get_settings

    for key, value in server.env().items():
        monkeypatch.setenv(key, value)
    # An entry point run earlier in this process (a CLI call, init_ray) may have exported
    # MLflow's S3 endpoint for another test's server (apply_engine_env keeps values
    # already set): MLflow would send its artifacts to that server, gone by now.
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", server.endpoint)
    get_settings.cache_clear()
