"""Settings, validated once at the boundary and read through a cached getter.

By default everything the system writes goes under one workspace folder
(``PUMPFLEET_HOME``, default ``./.pumpfleet``). A cluster deployment overrides
``RAY_ADDRESS``, ``MLFLOW_TRACKING_URI`` and the data locations, which may be ``s3://``
URIs (``PUMPFLEET_STORAGE_URI`` for all of them, or one each), with object storage
configured as AWS tools are (``AWS_ENDPOINT_URL``, keys, region). The workspace itself
stays a local folder: the SQLite MLflow db, Tune's experiments and the signing key.

Every environment variable the project reads is a field here, read when
:func:`get_settings` is first called, never at import. The environment is written only
for engines that take their configuration from environment variables alone, by entry
points, never by library code: :func:`apply_engine_env` (MLflow's HTTP client, the
engines' telemetry) and ``serve_apps.run.use_serve_env`` (Serve, before Ray starts).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Telemetry of every engine we drive is off unless the user turned it on explicitly.
TELEMETRY_OFF = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "ORT_DISABLE_TELEMETRY": "1",
    "NML_DISABLE_USAGE_LOGGING": "1",
    "DO_NOT_TRACK": "1",
}


class Settings(BaseSettings):
    """Where pumpfleet keeps its state and which engines it talks to."""

    model_config = SettingsConfigDict(env_prefix="PUMPFLEET_", extra="ignore")

    home: Path = Field(default=Path(".pumpfleet"))
    ray_address: str | None = Field(
        default=None, validation_alias=AliasChoices("RAY_ADDRESS", "PUMPFLEET_RAY_ADDRESS")
    )
    mlflow_tracking_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "PUMPFLEET_MLFLOW_TRACKING_URI"),
    )
    # The cluster's Ray auth token (token authentication), sent to its job server.
    ray_auth_token: str | None = Field(
        default=None, validation_alias=AliasChoices("RAY_AUTH_TOKEN"), repr=False
    )
    # The Ray job server (dashboard URL) that retraining is submitted to, by the monitor's
    # triggers and the Serve admin route.
    jobs_address: str | None = None
    # The scoring service's credentials (serve_apps/security.py): scoring keys,
    # comma-separated, and the admin token, or files holding them (one key per line),
    # e.g. mounted secrets. Only their digests reach Serve.
    api_keys: str | None = Field(default=None, repr=False)
    api_keys_file: Path | None = None
    admin_token: str | None = Field(default=None, repr=False)
    admin_token_file: Path | None = None
    # The crews' view (issue 20): the fleet database (default: SQLite, fleet.db in the
    # workspace; on a cluster postgresql+psycopg://user@host/db), and the webhooks its
    # alert events are POSTed to (comma-separated URLs), signed with the secret.
    fleet_db_url: str | None = None
    webhook_urls: str | None = None
    webhook_secret: str | None = Field(default=None, repr=False)
    # Who acts, in audit records (a CI job, a service account); the OS user if unset.
    user: str | None = None
    # MLflow's HTTP client against a tracking server that is down retries each request 7
    # times with backoff factor 2 by default (minutes before an error); 4 with factor 1
    # say so in about 15 s. MLflow reads these from its environment variables only (no
    # client argument), so apply_engine_env exports them at the entry points.
    mlflow_http_max_retries: int = Field(
        default=4,
        ge=0,
        validation_alias=AliasChoices(
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "PUMPFLEET_MLFLOW_HTTP_MAX_RETRIES"
        ),
    )
    # An int: MLflow parses the variable with int() and refuses "1.0".
    mlflow_http_backoff_factor: int = Field(
        default=1,
        ge=0,
        validation_alias=AliasChoices(
            "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "PUMPFLEET_MLFLOW_HTTP_BACKOFF_FACTOR"
        ),
    )
    mlflow_http_timeout_s: int = Field(
        default=30,
        ge=1,
        validation_alias=AliasChoices(
            "MLFLOW_HTTP_REQUEST_TIMEOUT", "PUMPFLEET_MLFLOW_HTTP_TIMEOUT_S"
        ),
    )
    # CPUs for a Ray instance we start ourselves; ignored when joining a cluster.
    num_cpus: int = Field(default=2, ge=1)
    # Path of the ed25519 key that signs edge bundles; a development key is made if unset.
    signing_key: Path | None = None
    telemetry: bool = False
    # Where the data lives. Each location is a local folder or a URI (s3://bucket/prefix):
    # its own setting (PUMPFLEET_DATA_URI, ...), else under PUMPFLEET_STORAGE_URI, else
    # under the workspace. Filled in by _locations; the *_dir properties below are the
    # workspace's own folders, which stay local (the SQLite MLflow db, Tune, keys).
    storage_uri: str | None = None
    data_uri: str = ""  # the fleet dataset ingest reads by default
    features_uri: str = ""  # feature snapshots
    predictions_uri: str = ""  # the prediction log (and, beside it, edge uploads)
    reports_uri: str = ""  # the monitor's reports
    bundles_uri: str = ""  # signed edge bundles
    # MLflow's artifact store when MLflow runs embedded (SQLite): e.g. s3://bucket/mlflow.
    artifact_uri: str | None = None
    # Object storage, configured as AWS tools are, by the same variables: an S3-compatible
    # endpoint other than AWS's, the keys (else pyarrow's and boto3's own chain: ~/.aws,
    # instance and pod roles) and the region.
    aws_endpoint_url: str | None = Field(
        default=None, validation_alias=AliasChoices("AWS_ENDPOINT_URL")
    )
    aws_access_key_id: str | None = Field(
        default=None, validation_alias=AliasChoices("AWS_ACCESS_KEY_ID"), repr=False
    )
    aws_secret_access_key: str | None = Field(
        default=None, validation_alias=AliasChoices("AWS_SECRET_ACCESS_KEY"), repr=False
    )
    aws_session_token: str | None = Field(
        default=None, validation_alias=AliasChoices("AWS_SESSION_TOKEN"), repr=False
    )
    aws_default_region: str | None = Field(
        default=None, validation_alias=AliasChoices("AWS_DEFAULT_REGION", "AWS_REGION")
    )
    # The git commit of the code that runs, where no checkout says it (a Ray job's
    # working dir, an image): set by whoever submits the job, and in the image.
    git_commit: str | None = None

    @field_validator(
        "storage_uri",
        "artifact_uri",
        "aws_endpoint_url",
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
        "aws_default_region",
        "git_commit",
        "jobs_address",
        "user",
        "ray_auth_token",
        "api_keys",
        "api_keys_file",
        "admin_token",
        "admin_token_file",
        "fleet_db_url",
        "webhook_urls",
        "webhook_secret",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @model_validator(mode="after")
    def _locations(self) -> Settings:
        """Each unset location under the storage URI, else in the workspace."""
        base = (self.storage_uri or str(self.home)).rstrip("/")
        for name in ("data", "features", "predictions", "reports", "bundles"):
            field = f"{name}_uri"
            value = getattr(self, field)
            if not value:
                value = f"{base}/{name}"
            elif "://" not in value:  # a local folder: absolute, as home is
                value = str(Path(value).expanduser().resolve())
            setattr(self, field, value.rstrip("/"))
        return self

    @property
    def workspace_uri(self) -> str:
        """Where state shared by every node goes (the monitor's triggers, the device
        book): the storage URI, else the workspace."""
        return (self.storage_uri or str(self.home)).rstrip("/")

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def features_dir(self) -> Path:
        return self.home / "features"

    @property
    def bundles_dir(self) -> Path:
        return self.home / "bundles"

    @property
    def predictions_dir(self) -> Path:
        return self.home / "predictions"

    @property
    def reports_dir(self) -> Path:
        return self.home / "reports"

    @property
    def keys_dir(self) -> Path:
        return self.home / "keys"

    @property
    def tune_dir(self) -> Path:
        return self.home / "tune"

    @property
    def fleet_db(self) -> str:
        """The fleet database's URL: the configured one, else SQLite in the workspace."""
        return self.fleet_db_url or f"sqlite:///{self.home / 'fleet.db'}"

    @property
    def tracking_uri(self) -> str:
        """MLflow tracking URI: the configured server, else SQLite in the workspace."""
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{self.home / 'mlflow.db'}"

    @property
    def artifact_root(self) -> str | None:
        """Where MLflow stores artifacts when it runs embedded (SQLite); None with a
        tracking server, whose own artifact store (e.g. S3) then holds them."""
        if self.tracking_uri.startswith(("http://", "https://")):
            return None
        if self.artifact_uri:
            return self.artifact_uri.rstrip("/")
        if self.storage_uri:
            return f"{self.storage_uri.rstrip('/')}/mlartifacts"
        return (self.home / "mlartifacts").as_uri()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings()


def engine_env(settings: Settings) -> dict[str, str]:
    """The environment variables the engines read for what ``settings`` say: MLflow's HTTP
    retries and timeout and S3 endpoint, and their telemetry off (unless
    ``settings.telemetry``)."""
    env = {} if settings.telemetry else dict(TELEMETRY_OFF)
    env |= {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(settings.mlflow_http_max_retries),
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": str(settings.mlflow_http_backoff_factor),
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(settings.mlflow_http_timeout_s),
    }
    if settings.aws_endpoint_url:  # MLflow's S3 artifact store reads its endpoint here
        env["MLFLOW_S3_ENDPOINT_URL"] = settings.aws_endpoint_url
    return env


def apply_engine_env(settings: Settings) -> None:
    """Export :func:`engine_env` to this process, for the engines that are configured by
    environment variables only (MLflow's HTTP client, the engines' usage reporting).

    Called by entry points (the CLI, ``init_ray``), never by library code or at import
    time; values already set are kept.
    """
    for key, value in engine_env(settings).items():
        os.environ.setdefault(key, value)


def quiet_telemetry(settings: Settings) -> None:
    """The name entry points have called :func:`apply_engine_env` by."""
    apply_engine_env(settings)
