"""What a device's environment says about it, for the edge agent and the engine builder
that run there (neither loads the cloud :class:`pumpfleet.settings.Settings`).

Read when asked (:func:`device_settings`), never at import time.
"""

from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class DeviceSettings(BaseSettings):
    """The device's own variables; none of them is required."""

    model_config = SettingsConfigDict(extra="ignore")

    # NVIDIA's CUDA and L4T container images set it; part of a TensorRT engine's cache key.
    cuda_version: str = Field(
        default="?", validation_alias=AliasChoices("CUDA_VERSION", "PUMPFLEET_CUDA_VERSION")
    )


def device_settings() -> DeviceSettings:
    """The device's settings as its environment has them now."""
    return DeviceSettings()
