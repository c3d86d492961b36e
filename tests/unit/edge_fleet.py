"""A small cloud for the rollout tests: a real HTTP server on loopback whose routes call
the same core functions the Serve routes call (pumpfleet.edge_ingest.handle_upload,
pumpfleet.fleet_devices.pull / bundle_file / devices). It can refuse assignments
(``assignments_online``) or replay one it answered before (``replay``)."""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from pumpfleet import fleet_devices
from pumpfleet.edge_ingest import handle_upload
from pumpfleet.errors import InputError
from tests.conftest import serve_in_background


class FleetCloud:
    def __init__(self, home: Path, log_root: Path, signing_key: Any, public: str) -> None:
        self.home, self.log_root = home, log_root
        self.keys, self.public = [signing_key], public
        self.assignments_online = True
        self.replay: dict[str, Any] | None = None  # answered instead of a fresh pull
        self.answers: list[dict[str, Any]] = []
        self.clock = time.time
        self._lock = threading.Lock()  # the workspace's files: one writer at a time
        cloud = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != "/v1/edge/upload":
                    return self._send(404, {"detail": "no route"})
                try:
                    return self._send(200, handle_upload(cloud.log_root, body))
                except InputError as e:
                    return self._send(422, {"detail": str(e)})

            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                q = dict(urllib.parse.parse_qsl(url.query))
                try:
                    if url.path == "/v1/edge/assignment":
                        return self._send(*cloud.pull(q["device_id"], int(q["root_version"])))
                    if url.path.startswith("/v1/edge/bundles/"):
                        cls, bundle = url.path.removeprefix("/v1/edge/bundles/").split("/")
                        with cloud._lock:
                            path = fleet_devices.bundle_file(cloud.home, cls, bundle)
                        return self._send_bytes(path.read_bytes())
                    if url.path == "/v1/devices":
                        with cloud._lock:
                            rows = fleet_devices.devices(cloud.home, cloud.log_root, cloud.clock())
                        return self._send(200, {"devices": rows})
                except InputError as e:
                    return self._send(404, {"detail": str(e)})
                return self._send(404, {"detail": "no route"})

            def _send(self, code: int, obj: Any) -> None:
                self._send_bytes(json.dumps(obj).encode(), code)

            def _send_bytes(self, data: bytes, code: int = 200) -> None:
                try:
                    self.send_response(code)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = serve_in_background(self.server)

    def pull(self, device_id: str, root_version: int) -> tuple[int, dict[str, Any]]:
        if not self.assignments_online:
            return 503, {"detail": "offline"}
        if self.replay is not None:
            return 200, self.replay
        with self._lock:
            answer = fleet_devices.pull(
                self.home,
                self.log_root,
                device_id,
                root_version,
                self.keys,
                self.public,
                self.clock(),
            )
        self.answers.append(answer)
        return 200, answer

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
