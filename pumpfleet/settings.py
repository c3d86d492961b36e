"""Settings, validated once at the boundary and read through a cached getter.

Everything the system writes goes under one workspace folder (``PUMPFLEET_HOME``,
default ``./.pumpfleet``). A cluster deployment overrides ``RAY_ADDRESS``,
``MLFLOW_TRACKING_URI`` and the data paths (which may be ``s3://`` URIs).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field, field_validator
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
    # CPUs for a Ray instance we start ourselves; ignored when joining a cluster.
    num_cpus: int = Field(default=2, ge=1)
    # Path of the ed25519 key that signs edge bundles; a development key is made if unset.
    signing_key: Path | None = None
    telemetry: bool = False

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        return value.expanduser().resolve()

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
        return (self.home / "mlartifacts").as_uri()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings()


def quiet_telemetry(settings: Settings) -> None:
    """Switch the engines' usage reporting off, unless the user asked for it.

    Called by entry points, never at import time; values already set are kept.
    """
    if settings.telemetry:
        return
    for key, value in TELEMETRY_OFF.items():
        os.environ.setdefault(key, value)
