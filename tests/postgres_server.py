"""A real PostgreSQL server for tests, from Debian's package (``make system-deps``):
``initdb`` into a fresh folder, ``postgres`` on 127.0.0.1 at a free port, stopped by its
PID. As root (a container) it runs as the package's ``postgres`` user, which PostgreSQL
requires; otherwise as the user running the tests.

Without the binaries a test that needs it is skipped, saying why; in CI (``CI`` set) it
fails instead. Each test gets a database of its own (:meth:`PostgresServer.new_database`).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port

USER = "pumpfleet"


def binaries() -> Path:
    """The folder of ``initdb`` and ``postgres``; skips (fails in CI) without them."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    on_path = shutil.which("postgres")
    if found:
        return Path(found[-1]).parent
    if on_path:
        return Path(on_path).parent
    reason = "PostgreSQL not installed: apt-get install postgresql (make system-deps)"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def _as_owner() -> dict[str, Any]:
    """Popen arguments that drop root to the package's postgres user (PostgreSQL refuses
    to run as root); nothing otherwise."""
    if os.geteuid() != 0:
        return {}
    try:
        pw = pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail("running as root with no postgres user to run PostgreSQL as")
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


@dataclass
class PostgresServer:
    port: int
    pid: int
    _count: list[int] = field(default_factory=lambda: [0])

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{USER}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database's SQLAlchemy URL."""
        import psycopg

        self._count[0] += 1
        name = f"t{os.getpid()}_{self._count[0]}"
        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user={USER} dbname=postgres", autocommit=True
        ) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server on 127.0.0.1 for the duration of the block."""
    bin_dir = binaries()
    owner = _as_owner()
    home = Path(tempfile.mkdtemp(prefix="pumpfleet-pg-"))
    if owner:
        os.chown(home, owner["user"], owner["group"])
    data = home / "data"
    subprocess.run(
        [str(bin_dir / "initdb"), "-D", str(data), "-U", USER, "-A", "trust", "-E", "UTF8"],
        check=True,
        capture_output=True,
        **owner,
    )
    port = free_port()
    log = open(home / "server.log", "wb")  # noqa: SIM115 (the server's, closed below)
    proc = subprocess.Popen(
        [
            str(bin_dir / "postgres"),
            "-D",
            str(data),
            "-k",
            str(home),
            "-p",
            str(port),
            "-h",
            "127.0.0.1",
            "-c",
            "fsync=off",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        **owner,
    )
    try:
        deadline = time.monotonic() + 60
        import psycopg

        while True:
            try:
                psycopg.connect(f"host=127.0.0.1 port={port} user={USER} dbname=postgres").close()
                break
            except psycopg.OperationalError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"postgres did not start: {(home / 'server.log').read_text()[-2000:]}"
                    ) from None
                time.sleep(0.1)
        yield PostgresServer(port, proc.pid)
    finally:
        proc.send_signal(signal.SIGINT)  # fast shutdown, by its own PID
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session (skipped where it is not installed)."""
    with postgres_server() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def fleet_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh fleet database's URL: SQLite in the test's folder, or a new database on
    the session's PostgreSQL server. Import it (with ``pg_server``) into a test module to
    run its tests on both."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fleet.db'}"
    server: PostgresServer = request.getfixturevalue("pg_server")
    return server.new_database()
