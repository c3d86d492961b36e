"""The edge bundle's manifest: the one contract between the exporter, which writes it, and
the device, which reads it. A manifest that breaks it is refused with a message naming the
field (``BundleError``), before anything in the bundle is used.

pydantic only: the device imports it. Member names are plain file names (never a path),
and every member a manifest names must be in the bundle.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from pumpfleet.errors import BundleError
from pumpfleet.names import PlainName

# The archive format (a tar of the manifest, its signature and the members).
FORMAT = 1
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
# Signatures beyond the first, where the targets role needs a threshold of keys:
# JSON [{"keyid", "sig"}] (absent from a bundle signed by one key).
SIGNATURES = "manifest.sigs"
# Member names, written by the exporter and read by the device.
FEATURE_SPEC = "feature_spec.json"
GOLDEN = "golden.npz"
BUILD_PROFILE = "build_profile.json"
ANOMALY_FEATURE_SPEC = "anomaly_feature_spec.json"
HEALTH_SPEC = "health_spec.json"
GOLDEN_ANOMALY_KEY = "anomaly_errors"  # the FP32 anomaly errors of the golden windows

_NUMBER = re.compile(r"[0-9]{1,18}")


def _number(text: str) -> str:
    if not _NUMBER.fullmatch(text):
        raise ValueError(f"{text!r} is not a model version number")
    return text


VersionNumber = Annotated[str, AfterValidator(_number)]


def _iso_time(text: str) -> str:
    try:
        datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 time") from None
    return text


Precision = Literal["fp32", "fp16", "int8"]


class _Part(BaseModel):
    # Fields a newer exporter adds are ignored (``min_agent_version`` says when a bundle
    # needs them); every field this agent reads is checked.
    model_config = ConfigDict(extra="ignore", frozen=True)


class Variant(_Part):
    """One compiled form of the RUL model, with what the export measured of it."""

    file: PlainName
    precision: Precision = "fp32"
    batch: int | Literal["dynamic"] = "dynamic"
    golden_atol: float = Field(default=1e-5, ge=0)
    rmse_ratio: float = Field(default=1.0, ge=0)
    bytes: int | None = None
    size_ratio: float | None = None
    weight_bytes: int | None = None
    weight_ratio: float | None = None
    holdout_rmse_hours: float | None = None
    max_abs_vs_fp32: float | None = None


class AnomalyVariant(_Part):
    """One compiled form of the health (anomaly) model."""

    file: PlainName
    precision: Precision = "fp32"
    golden_atol: float = Field(default=1e-4, ge=0)
    within_accuracy: bool = False
    bytes: int | None = None
    size_ratio: float | None = None
    flag_agreement: float | None = None
    flag_rate: float | None = None
    max_health_diff: float | None = None
    max_health_diff_near: float | None = None


class AnomalyEntry(_Part):
    """The bundle's health model: its files and how it was checked."""

    kind: Literal["anomaly"] = "anomaly"
    model_name: str = ""
    version: VersionNumber
    mlflow_run_id: str = ""
    model_kind: str = ""
    threshold: float | None = None
    target_far: float | None = None
    margin: float | None = None
    health_file: PlainName = HEALTH_SPEC
    feature_spec_file: PlainName = ANOMALY_FEATURE_SPEC
    golden_key: str = GOLDEN_ANOMALY_KEY
    onnx_parity_max_rel: float | None = None
    holdout_windows: int | None = None
    calibration_windows: int | None = None
    variants: dict[str, AnomalyVariant] = Field(min_length=1)
    accuracy_limit: dict[str, float] = Field(default_factory=dict)
    tensorrt: dict[str, Any] = Field(default_factory=dict)

    def files(self) -> list[str]:
        return [self.health_file, self.feature_spec_file, *(v.file for v in self.variants.values())]


class Golden(_Part):
    file: PlainName = GOLDEN
    windows: int = Field(default=0, ge=0)


class AccuracyLimit(_Part):
    rmse_ratio: float = Field(default=1.0, gt=0)


class RolledBack(_Part):
    """Versions rolled back in the registry above this bundle's (a device running one
    takes this bundle as the rollback)."""

    rul: list[int] = Field(default_factory=list)
    anomaly: list[int] = Field(default_factory=list)


def _only_variant() -> dict[str, Variant]:
    # A bundle from before variants carries its one model as model.onnx.
    return {"fp32": Variant(file="model.onnx")}


class BundleManifest(_Part):
    """What a signed bundle holds and how it was made."""

    format: int = FORMAT
    created: str = ""
    pump_class: str = Field(min_length=1, max_length=64)
    model_name: str = ""
    model_version: VersionNumber
    mlflow_run_id: str = ""
    feature_snapshot: str = ""
    min_agent_version: str = "0"
    onnx_parity_max_abs: float | None = None
    parity_windows: int | None = None
    holdout_windows: int | None = None
    calibration_windows: int | None = None
    variants: dict[str, Variant] = Field(default_factory=_only_variant, min_length=1)
    accuracy_limit: AccuracyLimit = Field(default_factory=AccuracyLimit)
    golden: Golden | None = None
    tensorrt: dict[str, Any] = Field(default_factory=dict)
    rolled_back: RolledBack = Field(default_factory=RolledBack)
    anomaly: AnomalyEntry | None = None
    # Freeze and replay protection (pumpfleet.trust): a number that grows with every
    # export of the class (milliseconds since the epoch at export) and the time after
    # which no device installs the bundle. A bundle exported before them has neither.
    release: int | None = Field(default=None, ge=1)
    expires: Annotated[str, AfterValidator(_iso_time)] | None = None
    # sha256 of every member, by its plain file name
    members: dict[PlainName, Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]]

    @model_validator(mode="after")
    def _named_members_exist(self) -> BundleManifest:
        named = [v.file for v in self.variants.values()]
        named += [self.golden.file] if self.golden else []
        named += self.anomaly.files() if self.anomaly else []
        missing = sorted(set(named) - set(self.members))
        if missing:
            raise ValueError(f"names {missing[0]!r}, which is not a member of the bundle")
        return self

    @classmethod
    def parse(cls, data: object, where: str = "manifest") -> BundleManifest:
        """A manifest from its JSON object; a BundleError naming the field otherwise."""
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            first = e.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "manifest"
            raise BundleError(f"{where}: {field}: {first['msg']}") from None

    def to_json_object(self) -> dict[str, Any]:
        """The manifest as the JSON object that is signed."""
        return self.model_dump(mode="json", exclude_none=True)
