"""What crosses the scoring service's boundary: the app's typed argument (``build_app``)
and the bodies of its routes. pydantic only: no Ray, no HTTP."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from pumpfleet.errors import InputError
from pumpfleet.readings import check_pump_id
from pumpfleet.records import MAX_RUL_HOURS, NAME
from pumpfleet.registry import CHALLENGER, CHAMPION, STAGING
from pumpfleet.routing import Arm

MAX_WINDOW = 10_000
MAX_BATCH = 10_000
MAX_DECODED_BYTES = 64 * 2**20
ARROW_STREAM = "application/vnd.apache.arrow.stream"
JSON = "application/json"
# strict: "12.5" and true are not readings (pydantic would take them as 12.5 and 1.0)
Reading = Annotated[float | None, Field(allow_inf_nan=False, strict=True)]
# 1970 to 2100: a time outside it is a client's mistake (and would overflow datetime64)
UnixTime = Annotated[float, Field(ge=0, le=4_102_444_800, allow_inf_nan=False, strict=True)]


def _pump_id(value: str) -> str:
    try:
        return check_pump_id(value)
    except InputError as e:  # pydantic turns a ValueError into a 422 naming the field
        raise ValueError(str(e).removeprefix("pump_id: ")) from None


# The one pump-id rule of every door (pumpfleet.readings.check_pump_id).
PumpId = Annotated[str, Field(strict=True), AfterValidator(_pump_id)]
# A class name: the prediction record's rule (it names folders: no dots first, no "/").
ClassName = Annotated[str, Field(strict=True, pattern=NAME)]


class FleetConfig(BaseModel):
    """The crews' view (``serve_apps/fleet_routes.py``): where the fleet state is, when a
    pump or a device is stale, the alerts' hysteresis, and the webhooks of alert events
    (URLs, the HMAC secret, timeouts and back-off)."""

    model_config = ConfigDict(extra="forbid")

    # None: sqlite:///<workspace>/fleet.db; on a cluster postgresql+psycopg://...
    db_url: str | None = None
    stale_seconds: float = Field(default=3600.0, gt=0)
    device_stale_seconds: float = Field(default=900.0, gt=0)
    open_after: int = Field(default=2, ge=1, le=1000)
    clear_after: int = Field(default=3, ge=1, le=1000)
    lower_band: float = Field(default=0.8, gt=0, le=1)
    escalate_at: float = Field(default=0.9, gt=0, le=1)
    default_horizon_hours: float = Field(default=72.0, gt=0)
    # scored rows waiting for the fleet state; past it they are dropped (and counted),
    # never waited for: scoring does not wait on the fleet database
    queue_rows: int = Field(default=50_000, ge=1)
    explain_per_batch: int = Field(default=16, ge=0, le=10_000)
    # a drain of the queue into the fleet database at most this often (its explanations
    # and its commit are per drain): the fleet state is at most this much later
    feed_seconds: float = Field(default=0.25, ge=0, le=60)
    # score history and delivered webhook events older than these are dropped
    score_retention_days: float = Field(default=90.0, gt=0)
    outbox_retention_days: float = Field(default=7.0, gt=0)
    webhook_urls: list[Annotated[str, Field(pattern=r"^https?://")]] = Field(default_factory=list)
    webhook_secret: str | None = Field(default=None, repr=False)
    webhook_timeout_seconds: float = Field(default=5.0, gt=0)
    webhook_backoff_seconds: float = Field(default=1.0, gt=0)
    webhook_backoff_cap_seconds: float = Field(default=300.0, gt=0)
    webhook_poll_seconds: float = Field(default=1.0, gt=0)

    @model_validator(mode="after")
    def _signed(self) -> FleetConfig:
        if self.webhook_urls and not self.webhook_secret:
            raise ValueError("webhook_urls need a webhook_secret to sign with")
        return self


class ScoringConfig(BaseModel):
    """What the app serves, where it logs and who may call it; the typed argument of
    ``build_app``. Unknown fields are refused: a misspelt key in a Serve config would
    otherwise be dropped without a word."""

    model_config = ConfigDict(extra="forbid")

    tracking_uri: str
    predictions_dir: str
    challenger_weight: float = Field(default=0.2, ge=0.0, le=1.0)
    salt: str = "pumpfleet-ab-1"
    flush_seconds: float = Field(default=1.0, gt=0)
    num_cpus: float = Field(default=0.5, gt=0)
    num_replicas: int = Field(default=1, ge=1, le=256)
    # sha256 digests of the scoring keys and admin tokens (never the keys themselves)
    api_key_sha256: list[str] = Field(default_factory=list)
    admin_token_sha256: list[str] = Field(default_factory=list)
    insecure_dev: bool = False  # no keys needed: local development only
    # Limits before work (serve_apps/doors.py): bodies of batches and edge uploads, of
    # every other route, an Arrow batch's decoded size, and the time to send a body.
    max_body_bytes: int = Field(default=32 * 2**20, gt=0)
    max_small_body_bytes: int = Field(default=2**20, gt=0)
    max_decoded_bytes: int = Field(default=MAX_DECODED_BYTES, gt=0)
    body_timeout_seconds: float = Field(default=30.0, gt=0)
    # The edge devices' credentials (pumpfleet.devices); None: devices.json in the
    # workspace, the folder that holds predictions_dir (where `pumpfleet edge device
    # issue` writes it).
    devices_uri: str | None = None
    # production serves champion and challenger; staging serves the ``staging`` alias only
    stage: Literal["production", "staging"] = "production"
    # how often each replica re-reads aliases and the split from the registry
    refresh_seconds: float = Field(default=5.0, gt=0)
    # the Ray job server (dashboard URL) that /v1/admin/retrain submits to; None: off
    jobs_address: str | None = None
    # The workspace folder of the edge fleet's rollouts (rollouts.json), trust root
    # (trust/) and keys; None: the folder that holds predictions_dir.
    workspace: str | None = None
    # The ed25519 key (PEM) that signs device assignments, and more keys held for the
    # assignment role after a rotation; None: <workspace>/keys/bundle-signing.pem, as
    # `pumpfleet edge bundle` makes it. Paths only: the keys stay on disk.
    signing_key: str | None = None
    assignment_keys: list[str] = Field(default_factory=list)
    # the crews' view: fleet state, alerts and webhooks (FleetConfig)
    fleet: FleetConfig = Field(default_factory=FleetConfig)

    def aliases(self) -> dict[Arm, str]:
        """The registry alias each arm serves."""
        if self.stage == "staging":
            return {Arm.CHAMPION: STAGING}
        return {Arm.CHAMPION: CHAMPION, Arm.CHALLENGER: CHALLENGER}

    def devices(self) -> str:
        """Where the device book is (:attr:`devices_uri`, or the workspace's)."""
        if self.devices_uri:
            return self.devices_uri
        root = self.predictions_dir.rstrip("/")
        parent = root.rsplit("/", 1)[0] if "/" in root else "."
        return f"{parent}/devices.json"

    def workspace_dir(self) -> str:
        """The edge fleet's workspace (:attr:`workspace`, or the folder holding
        ``predictions_dir``)."""
        if self.workspace:
            return self.workspace
        root = self.predictions_dir.rstrip("/")
        return root.rsplit("/", 1)[0] if "/" in root else "."

    def signing_keys(self) -> list[str]:
        """The assignment signing key's path first, then the others held."""
        first = self.signing_key or f"{self.workspace_dir()}/keys/bundle-signing.pem"
        return [first, *self.assignment_keys]

    def check(self) -> None:
        """Refuse to serve with no keys, unless for local development."""
        if not self.insecure_dev and not self.api_key_sha256:
            raise InputError(
                "no API keys: set PUMPFLEET_API_KEYS (or _FILE), or pass --insecure-dev"
            )


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pump_id: PumpId
    pump_class: ClassName
    readings: dict[str, Annotated[list[Reading], Field(min_length=1, max_length=MAX_WINDOW)]] = (
        Field(description="raw readings per channel over the window, oldest first; null = missing")
    )
    explain: bool = Field(
        default=False,
        strict=True,
        description="also return per-channel and per-time-block attributions",
    )


class ScoreResponse(BaseModel):
    pump_id: str
    pump_class: str
    arm: str
    model_version: str
    rul_hours: float
    failure_probability: float
    alert: bool
    health_score: float | None = Field(
        default=None, description="0 typical, 1 at the alarm threshold; null: no health model"
    )
    anomaly: bool | None = Field(default=None, description="health score above 1")
    anomaly_version: str | None = None
    explanation: dict[str, Any] | None = None


# The columns of a batch's answer (and of its Arrow stream): a single score's, less the
# explanation, which only /v1/score gives.
ANSWER_FIELDS = tuple(k for k in ScoreResponse.model_fields if k != "explanation")


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[dict[str, Any]] = Field(
        min_length=1, max_length=MAX_BATCH, description="score requests, as for /v1/score"
    )


class BatchResponse(BaseModel):
    results: list[ScoreResponse | None]
    errors: list[dict[str, Any]]


class SplitRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pump_class: ClassName | None = Field(default=None, description="one class; all when absent")
    challenger_weight: float | None = Field(default=None, ge=0.0, le=1.0, strict=True)
    shadow: bool | None = Field(default=None, strict=True)  # "yes" is no boolean


class RetrainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    classes: list[ClassName] | None = Field(
        default=None, min_length=1, description="classes to retrain; every served class if absent"
    )
    reason: str = Field(min_length=1, max_length=500, description="why; recorded with the job")
    epochs: int | None = Field(default=None, ge=1, le=1000, strict=True)


class Feedback(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pump_id: PumpId
    pump_class: ClassName
    observed_at: UnixTime | None = Field(
        default=None, description="when the outcome was seen (unix seconds); now if absent"
    )
    failed_at: UnixTime | None = Field(default=None, description="failure time (unix seconds)")
    rul_hours: (
        Annotated[float, Field(ge=0, le=MAX_RUL_HOURS, allow_inf_nan=False, strict=True)] | None
    ) = None
    maintained_at: UnixTime | None = Field(
        default=None, description="a maintenance of the pump (unix seconds): marks its alerts"
    )
