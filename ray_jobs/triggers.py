"""The Ray job server that the monitor's and the scheduler's retrains are submitted to,
behind the small :class:`pumpfleet.triggers.RetrainServer` interface the triggers use."""

from __future__ import annotations

from typing import Any

from pumpfleet.job_options import (
    RETRAIN_JOB_PREFIX,
    RetrainOptions,
    auth_headers,
    retrain_submission,
)
from pumpfleet.settings import Settings, get_settings
from pumpfleet.triggers import retrain_classes


class JobServer:
    """The Ray job server, for the calls the triggers need."""

    def __init__(self, address: str, token: str | None = None) -> None:
        """``token``: the cluster's Ray auth token; by default ``settings.ray_auth_token``
        (``RAY_AUTH_TOKEN``)."""
        self.address = address
        self._token = token
        self._client: Any = None

    @property
    def token(self) -> str | None:
        return self._token or get_settings().ray_auth_token

    def client(self) -> Any:
        if self._client is None:
            from ray.job_submission import JobSubmissionClient

            self._client = JobSubmissionClient(self.address, headers=auth_headers(self.token))
        return self._client

    def running_classes(self) -> set[str]:
        """Classes with a retrain job pending or running (``*``: one retrains them all)."""
        out: set[str] = set()
        for job in self.client().list_jobs():
            sid = job.submission_id or ""
            if sid.startswith(RETRAIN_JOB_PREFIX) and str(job.status) in ("PENDING", "RUNNING"):
                out |= retrain_classes(job.entrypoint, job.metadata)
        return out

    def submit(self, classes: list[str], reason: str) -> str:
        """A retrain of ``classes``, every other option at its default."""
        options = RetrainOptions(classes=classes, reason=reason)
        return submit_retrain(self.address, options, self.token)


def submit_retrain(
    address: str,
    options: RetrainOptions,
    token: str | None = None,
    runtime_env: dict[str, Any] | None = None,
) -> str:
    """Submit a retrain with ``options`` to the Ray job server at ``address`` (its
    dashboard URL) through Ray's Job Submission API; returns the submission id. ``token``
    is the cluster's Ray auth token where token authentication is on."""
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(address, headers=auth_headers(token))
    return str(client.submit_job(**retrain_submission(options, runtime_env)))


def job_server(address: str | None, settings: Settings) -> JobServer | None:
    """The job server at ``address`` (None: none configured)."""
    return JobServer(address, settings.ray_auth_token) if address else None
