"""The edge fleet's routes, part of the scoring deployment (:class:`EdgeFleetRoutes` is a
base of ``serve_apps.scoring.PumpScorer``): the devices view for operators, and the two
routes a device pulls from, each with its own token (``pumpfleet edge device issue``).

    GET /v1/devices                                  X-API-Key: <scoring key>
    GET /v1/edge/assignment?device_id=D&root_version=N   <the device's token>
    GET /v1/edge/bundles/<class>/<bundle id>             <the device's token>

They call the core functions ``pumpfleet edge rollout`` calls too
(:mod:`pumpfleet.fleet_devices`): the rollouts are advanced by their policy whenever an
assignment is pulled, and the assignment is signed by the trust root's assignment keys,
read from the workspace when first needed. A device pulls only its own assignment, and
fetches only bundles of its own class (as its last upload says).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import Path as PathParam
from fastapi import Query, Request
from fastapi.responses import FileResponse

from pumpfleet import fleet_devices
from pumpfleet.errors import InputError, NotFoundError
from serve_apps.errors import Forbidden, Unavailable
from serve_apps.http_app import DEVICE, SCORING, app, device_of
from serve_apps.schemas import ScoringConfig

NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
DeviceId = Annotated[str, Query(pattern=NAME, description="this device's id")]
RootVersion = Annotated[
    int, Query(ge=0, le=2**31, description="the version of the trust root the device holds")
]
ClassParam = Annotated[str, PathParam(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
BundleParam = Annotated[str, PathParam(pattern=r"^v\d{1,18}(-anomaly-v\d{1,18})?$")]

# One writer of the workspace's rollout book at a time in this replica (a pull advances
# the rollouts and may save them).
_BOOK = threading.Lock()


def load_signing_keys(paths: list[str]) -> tuple[list[Any], str]:
    """The private keys at ``paths`` and the first one's public key (the bundle signing
    key, whose implicit root devices trust first). Unavailable if the first is missing:
    the service never makes a key itself."""
    from pumpfleet import bundle

    if not Path(paths[0]).exists():
        raise Unavailable(
            f"no assignment signing key at {paths[0]} (made by `pumpfleet edge bundle`)"
        )
    keys = [bundle.load_or_create_key(Path(p)) for p in paths if Path(p).exists()]
    return keys, bundle.public_key_hex(keys[0])


def _report(log_root: Path, device_id: str) -> Any:
    """The device's latest report (its uploaded health), or None."""
    path = log_root / "edge" / device_id / "health.json"
    try:
        health = json.loads(path.read_text())
        return fleet_devices.report_of(device_id, health, path.stat().st_mtime)
    except (OSError, ValueError, TypeError):
        return None


class EdgeFleetRoutes:
    """The edge fleet's routes; the deployment sets ``config``."""

    config: ScoringConfig
    _signing: tuple[list[Any], str] | None = None

    def _keys(self) -> tuple[list[Any], str]:
        if self._signing is None:
            self._signing = load_signing_keys(self.config.signing_keys())
        return self._signing

    def _places(self) -> tuple[Path, Path]:
        """The workspace (rollouts, trust root) and the prediction log (device reports)."""
        return Path(self.config.workspace_dir()), Path(self.config.predictions_dir)

    @app.get("/v1/devices", dependencies=SCORING)
    def list_devices(self, request: Request) -> dict[str, Any]:
        """Each edge device: its class, site, bundle, when it was last seen and where it
        stands in its class's rollout."""
        home, log_root = self._places()
        with _BOOK:
            return {"devices": fleet_devices.devices(home, log_root, time.time())}

    @app.get("/v1/edge/assignment", dependencies=DEVICE)
    def edge_assignment(
        self, request: Request, device_id: DeviceId, root_version: RootVersion = 0
    ) -> dict[str, Any]:
        """The device's signed assignment (which bundle it should run, versioned and
        expiring) and the trust roots newer than the one it holds. A device pulls only
        its own."""
        device = device_of(request)
        if device is not None and device_id != device:
            raise Forbidden(f"this token is device {device}'s: it may not pull another's")
        keys, public = self._keys()
        home, log_root = self._places()
        with _BOOK:
            return fleet_devices.pull(
                home, log_root, device_id, root_version, keys, public, time.time()
            )

    @app.get(
        "/v1/edge/bundles/{pump_class}/{bundle}",
        dependencies=DEVICE,
        response_class=FileResponse,
        responses={200: {"content": {"application/octet-stream": {}}}},
    )
    def edge_bundle(
        self, request: Request, pump_class: ClassParam, bundle: BundleParam
    ) -> FileResponse:
        """A bundle a rollout of the class hands out (its sha256 is in the assignment).
        A device fetches only its own class's bundles."""
        device = device_of(request)
        home, log_root = self._places()
        if device is not None:
            report = _report(log_root, device)
            if report is not None and report.pump_class not in (None, pump_class):
                raise Forbidden(f"device {device} runs {report.pump_class}, not {pump_class}")
        try:
            with _BOOK:
                path = fleet_devices.bundle_file(home, pump_class, bundle)
        except InputError as e:
            raise NotFoundError(str(e)) from None
        if not path.is_file():
            raise NotFoundError(f"{pump_class} {bundle}: its file is gone from the workspace")
        return FileResponse(path, media_type="application/octet-stream")
