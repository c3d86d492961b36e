"""What Serve's HAProxy front door must do that Ray 2.60 cannot be told, added to the
configuration Ray writes.

Serve renders HAProxy's configuration itself (``ray.serve._private.haproxy``) and takes
some settings from ``RAY_SERVE_HAPROXY_*`` variables (``serve_apps/front_door.py`` sets
those), but not these:

- ``timeout http-request``: the request's head must arrive within it, and then its body
  up to one buffer (16 kB: a single window's request whole) within as long again
  (``wait-for-body``), else 408. ``timeout client`` alone bounds only the silence
  between two packets, so a client that sends a byte every few seconds (slowloris) would
  keep its connection for ever.
- A declared body over the service's limit gets 413 at the door, before it is read.
- ``x-pumpfleet-request-id``: a fresh id per request, set here (a client's own value is
  replaced). A request that HAProxy retries on another replica after its first replica
  died keeps it, so the prediction log can tell the two attempts' rows apart from two
  requests (:func:`pumpfleet.predlog.read_log` keeps one).
- The stats page and the Prometheus exporter bind every interface (``*:PORT``,
  ``:PORT``); here they bind loopback.
- A bounded queue per replica, kept by HAProxy (:class:`Shed`): at most
  ``max_ongoing`` requests in progress on a replica (``maxconn``) and, past that,
  ``max_queued`` waiting a replica in the backend's queue; a request beyond both is
  answered 503 with Retry-After at once. The replica's own limits (Serve's
  ``max_queued_requests``) count only requests its event loop has begun, so an overload
  that waits in the replica's socket (a starved or busy replica reads a request and scores
  it before it reads the next) was never shed there: seen once in CI, 592 requests of 300
  clients answered in 6 s, all 200, none 503.
- ``no log`` for Ray's ``log global`` where the door keeps no log
  (:func:`serve_apps.front_door.access_log`): Ray sends a line a request to syslog on
  127.0.0.1:514 whether or not anything reads it there.

``RAY_SERVE_HAPROXY_BINARY_PATH`` names a script that runs this file with the real
binary and the options file: :func:`main` amends the file named after ``-f`` and then
becomes HAProxy. Standard library only: it runs as a script, outside the package, each
time Serve starts or reloads HAProxy.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import sys
from dataclasses import dataclass

MARKER = "# pumpfleet front door (serve_apps/haproxy_config.py)"
REQUEST_ID_HEADER = "x-pumpfleet-request-id"


class TemplateChanged(ValueError):
    """Ray's configuration no longer has what :func:`amend` adds to."""


@dataclass(frozen=True)
class Shed:
    """The door's load shedding, per replica of an app: ``max_ongoing`` requests in
    progress, ``max_queued`` more waiting (the deployment's ``max_ongoing_requests`` and
    ``max_queued_requests``); past both, 503 with ``Retry-After: retry_after_s``. A queued
    request waits at most ``queue_timeout_s`` for a replica (then HAProxy's 503, which Ray
    answers as 500, as when no replica is up)."""

    max_ongoing: int
    max_queued: int
    retry_after_s: int
    queue_timeout_s: int


def _app_backend(section: str) -> bool:
    """A backend of a Serve app (Ray names them ``http-<app>``; ``default_backend`` only
    answers 404)."""
    return section.startswith("backend ") and section != "backend default_backend"


def _shed_lines(shed: Shed) -> list[str]:
    """A backend's queue bound: past ``max_queued`` waiting a replica on average
    (``avg_queue``: the backend's queue over its servers up), 503 with Retry-After."""
    return [
        f"    {MARKER}",
        f"    timeout queue {shed.queue_timeout_s}s",
        "    http-request return status 503 content-type text/plain "
        f'string "overloaded: retry after {shed.retry_after_s} s" '
        f"hdr retry-after {shed.retry_after_s} if {{ avg_queue() ge {shed.max_queued} }}",
    ]


def amend(
    text: str,
    request_timeout_s: int,
    max_body_bytes: int,
    access_log: bool = True,
    shed: Shed | None = None,
) -> str:
    """Ray's HAProxy configuration with the front door's additions (unchanged if it has
    them already); without ``access_log``, HAProxy logs nothing (no request, no health
    check); with ``shed``, each app's replicas get its limits. TemplateChanged if a section
    it adds to is missing."""
    if MARKER in text:
        return text
    lines = text.split("\n")
    out: list[str] = []
    section = ""
    seen = set()
    for line in lines:
        stripped = line.strip()
        head = bool(line) and not line[0].isspace()
        if head:
            section = stripped
        if not access_log and stripped == "log global":
            line = line.replace("log global", "no log")  # the proxy's own log: none
        bind = re.fullmatch(r"(\s*)bind (\*)?:(\d+)", line)
        if bind and section in ("frontend prometheus", "listen stats"):
            line = f"{bind.group(1)}bind 127.0.0.1:{bind.group(3)}"
            seen.add(section)
        app = shed if shed is not None and _app_backend(section) else None
        if app and stripped.startswith("server ") and " backup" not in line:
            # a replica (a backup server is the head's proxy, used when none is up)
            line = f"{line} maxconn {app.max_ongoing}"
        out.append(line)
        if app and head:
            out += _shed_lines(app)
        if stripped == "defaults":
            out += [f"    {MARKER}", f"    timeout http-request {request_timeout_s}s"]
            seen.add("defaults")
        elif section == "frontend http_frontend" and stripped.startswith("bind "):
            out += [
                f"    {MARKER}",
                # hdr_val does not read lengths of 13 digits and more: count the digits too
                "    http-request deny deny_status 413 if "
                f"{{ req.hdr_val(content-length) gt {max_body_bytes} }} || "
                f"{{ req.hdr(content-length) -m len gt {len(str(max_body_bytes))} }}",
                # after the size check (option http-buffer-request would wait first)
                f"    http-request wait-for-body time {request_timeout_s}s",
                f"    http-request set-header {REQUEST_ID_HEADER} %[uuid]",
            ]
            seen.add("frontend http_frontend")
    missing = {"defaults", "frontend http_frontend", "frontend prometheus", "listen stats"}
    missing -= seen
    if missing:
        raise TemplateChanged(f"Ray's HAProxy configuration has no {sorted(missing)[0]!r}")
    return "\n".join(out)


def config_path(args: list[str]) -> str | None:
    """The configuration file HAProxy is started with (``-f FILE``)."""
    for flag, value in itertools.pairwise(args):
        if flag == "-f":
            return value
    return None


def die_with_parent(parent: int) -> None:
    """Have the kernel stop this process (SIGTERM) when its parent, Serve's HAProxy
    manager, dies however it dies: a HAProxy left behind would hold its ports and serve
    stale replicas. Kept across exec; Linux only (elsewhere nothing)."""
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it was gone before the signal was set
        sys.exit(1)


def main(argv: list[str]) -> None:
    """``haproxy_config.py REAL_BINARY OPTIONS_JSON HAPROXY_ARGS...``: amend the file
    after ``-f`` by the options, then exec the real binary with the same arguments, to
    stop when its parent does."""
    parent = os.getppid()
    binary, options_file, args = argv[0], argv[1], argv[2:]
    path = config_path(args)
    if path is not None:
        with open(options_file) as f:
            opts = json.load(f)
        with open(path) as f:
            text = f.read()
        shed = opts.get("shed")
        amended = amend(
            text,
            int(opts["request_timeout_s"]),
            int(opts["max_body_bytes"]),
            bool(opts.get("access_log", True)),
            Shed(**shed) if shed else None,
        )
        if amended != text:
            with open(f"{path}.pumpfleet", "w") as f:
                f.write(amended)
            os.replace(f"{path}.pumpfleet", path)
    die_with_parent(parent)
    os.execv(binary, [binary, *args])


if __name__ == "__main__":
    main(sys.argv[1:])
