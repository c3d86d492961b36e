"""Start and stop the scoring app on the Ray that ``init_ray`` reached."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ray import serve

from pumpfleet.errors import RegistryError
from pumpfleet.registry import CHAMPION, Registry, model_name
from pumpfleet.settings import Settings
from serve_apps import front_door
from serve_apps.schemas import FleetConfig, ScoringConfig
from serve_apps.scoring import MAX_ONGOING_REQUESTS, MAX_QUEUED_REQUESTS, RETRY_AFTER_S, build_app
from serve_apps.security import Secrets, load_secrets

log = logging.getLogger(__name__)

APP_NAME = "pumpfleet"
STAGING_APP = "pumpfleet-staging"
STAGING_PREFIX = "/staging"
# Serve's throughput-optimised mode: the ingress replica answers HTTP itself, 7.5 times the
# requests of the default proxy on 2 cores (../shared/STACK.md, benchmarks/serve_load.py);
# and HAProxy as the front door on --port, in front of the replicas' own ports
# (serve_apps/front_door.py). Ray's processes read these from their environment when they
# start (the driver's own ray.serve constants included), so they are exported before
# ray.init by the entry points that start Serve (use_serve_env), never by library code or
# at import.
SERVE_ENV = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_HA_PROXY": "1"}
# In that mode a stopping replica keeps answering for at least 30 s so that a load
# balancer in front can drain it. A local run's front door (the demo, the tests, a
# workstation) hears of a stopping replica from Serve at once and sends a refused
# request to another replica: there 30 s would only be waiting at every shutdown.
LOCAL_SERVE_ENV = {**SERVE_ENV, "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1"}


def use_serve_env(local: bool = False, home: Path | None = None) -> None:
    """Set SERVE_ENV (``local``: LOCAL_SERVE_ENV) and the front door's settings, its files
    under ``home`` (a workspace; else a private temp folder), where the operator has not
    set those variables themselves. For entry points only (the CLI's ``serve``, the demo,
    the benchmarks), before Ray starts."""
    for k, v in (LOCAL_SERVE_ENV if local else SERVE_ENV).items():
        os.environ.setdefault(k, v)
    if os.environ["RAY_SERVE_ENABLE_HA_PROXY"] == "1":
        for k, v in front_door.prepare(home).items():
            # the script that runs HAProxy wraps the operator's binary, if they named one
            if k in front_door.OWN_VARS:
                os.environ[k] = v
            else:
                os.environ.setdefault(k, v)


def start(
    settings: Settings,
    port: int,
    challenger_weight: float,
    host: str = "127.0.0.1",
    secrets: Secrets | None = None,
    insecure_dev: bool = False,
    max_body_bytes: int | None = None,
    staging: bool = True,
    refresh_seconds: float | None = None,
    num_replicas: int = 1,
) -> str:
    """Deploy the scoring app; returns its base URL. Binds to loopback by default. The
    keys come from ``secrets``, else from ``settings`` (``serve_apps/security.py``);
    without any, it refuses to start unless ``insecure_dev``. With ``staging``, a second
    application at ``/staging`` serves each class's ``staging`` alias, where
    ``pumpfleet deploy --stage staging`` tests a new version before production sees it."""
    secrets = secrets or load_secrets(settings=settings)
    cfg = ScoringConfig(
        tracking_uri=settings.tracking_uri,
        predictions_dir=settings.predictions_uri,
        challenger_weight=challenger_weight,
        api_key_sha256=list(secrets.api_keys),
        admin_token_sha256=list(secrets.admin_tokens),
        insecure_dev=insecure_dev,
        jobs_address=settings.jobs_address,
        num_replicas=num_replicas,
        # the edge fleet's rollouts, trust root and assignment key: the workspace's own
        workspace=str(settings.home),
        signing_key=str(settings.signing_key or settings.keys_dir / "bundle-signing.pem"),
        fleet=FleetConfig(
            db_url=settings.fleet_db,
            webhook_urls=[u.strip() for u in (settings.webhook_urls or "").split(",") if u.strip()],
            webhook_secret=settings.webhook_secret,
        ),
    )
    if max_body_bytes:
        cfg = cfg.model_copy(update={"max_body_bytes": max_body_bytes})
    if refresh_seconds:
        cfg = cfg.model_copy(update={"refresh_seconds": refresh_seconds})
    cfg.check()
    registry = Registry(settings.tracking_uri)
    if not any(registry.version_by_alias(model_name(c), CHAMPION) for c in registry.classes()):
        raise RegistryError(
            f"no champion model in {settings.tracking_uri}; run `pumpfleet evaluate` first"
        )
    front_door.configure(
        cfg.max_body_bytes,
        front_door.shed(MAX_ONGOING_REQUESTS, MAX_QUEUED_REQUESTS, RETRY_AFTER_S),
    )
    serve.start(http_options={"host": host, "port": port})
    serve.run(build_app(cfg), name=APP_NAME, route_prefix="/", blocking=False)
    if staging:
        staged = cfg.model_copy(
            update={
                "stage": "staging",
                "num_replicas": 1,
                "predictions_dir": f"{settings.workspace_uri}/staging-predictions",
            }
        )
        serve.run(build_app(staged), name=STAGING_APP, route_prefix=STAGING_PREFIX, blocking=False)
    url = f"http://{host}:{port}"
    log.info("scoring service up at %s (challenger weight %.2f)", url, challenger_weight)
    return url


def stop() -> None:
    """Shut Serve down gracefully: replicas flush their prediction logs first."""
    serve.shutdown()
