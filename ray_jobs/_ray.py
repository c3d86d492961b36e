"""Connecting to Ray: a local instance on embedded defaults, or the cluster in
``RAY_ADDRESS`` (which ``ray job submit`` sets for the entry points)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import ray

from pumpfleet.lineage import submission_env
from pumpfleet.settings import Settings, apply_engine_env, engine_env

log = logging.getLogger(__name__)


def init_ray(settings: Settings) -> bool:
    """Start or join Ray; returns True if this call started it (so should shut it down)."""
    apply_engine_env(settings)
    if ray.is_initialized():
        return False
    # What the engines read from the environment (as set here or by the operator) reaches
    # the workers too: Serve replicas and Tune trials talk to MLflow themselves.
    names = dict.fromkeys((*_PASS_ON, *engine_env(settings)))
    env_vars = {k: os.environ[k] for k in names if k in os.environ}
    # Workers resolve the workspace as this driver did, whatever their working folder,
    # and record the commit this driver runs (their working dir has no .git).
    env_vars["PUMPFLEET_HOME"] = str(settings.home)
    env_vars |= submission_env(settings)
    # In a Ray job, what the job's runtime env sets reaches every worker already, and
    # Ray refuses a driver that sets one of its keys again.
    for key in _job_env_keys():
        env_vars.pop(key, None)
    runtime_env = {"env_vars": env_vars}
    if settings.ray_address:
        log.info("joining the Ray cluster at %s", settings.ray_address)
        ray.init(address=settings.ray_address, runtime_env=runtime_env, log_to_driver=False)
    else:
        # A new local instance ("local": never someone else's head on this machine),
        # bound to loopback so that no Ray port listens on other interfaces.
        ray.init(
            address="local",
            num_cpus=settings.num_cpus,
            include_dashboard=False,
            runtime_env=runtime_env,
            log_to_driver=False,
            _node_ip_address="127.0.0.1",
        )
    protect_token()
    ray.data.DataContext.get_current().enable_progress_bars = True
    return True


def _job_env_keys() -> set[str]:
    """The environment variables the runtime env of the Ray job this driver runs in sets
    (none outside a job): Ray hands a job's driver its config in this variable."""
    config = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if not config:
        return set()
    runtime_env = json.loads(config).get("runtime_env") or {}
    return set(runtime_env.get("env_vars") or {})


def protect_token(path: Path | None = None) -> bool:
    """Ray writes its auth token (``~/.ray/auth_token``) readable by every user on the
    machine; make it its owner's alone (0600). Whether the mode was changed."""
    path = path or Path.home() / ".ray" / "auth_token"
    try:
        if path.is_file() and path.stat().st_mode & 0o077:
            path.chmod(0o600)
            return True
    except OSError as e:  # another user's file, a read-only home: say so, go on
        log.warning("could not make %s private: %s", path, e)
    return False


def cluster_cpus() -> int:
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


# Settings the workers need to see as the driver does.
_PASS_ON = (
    "MLFLOW_TRACKING_URI",
    "AWS_DEFAULT_REGION",
    "RAY_USAGE_STATS_ENABLED",
    "MLFLOW_DISABLE_TELEMETRY",
    "ORT_DISABLE_TELEMETRY",
    "NML_DISABLE_USAGE_LOGGING",
)
