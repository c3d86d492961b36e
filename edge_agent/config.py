"""The agent's configuration: one YAML or JSON file, validated once at start."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pumpfleet.errors import InputError, one_line
from pumpfleet.trust import Root, implicit_root, parse_root, verify


class PayloadMap(BaseModel):
    """Where a reading's fields are in a message's JSON. A path is keys joined by dots
    into the payload (``data.temp``); ``topic:N`` is level N of the message's topic
    (from 0: ``site4/pumps/P-17/readings`` has the pump id at ``topic:2``). A payload
    is one reading, or a JSON array of them, each mapped alike."""

    model_config = ConfigDict(extra="forbid")

    pump_id: str = "pump_id"
    timestamp: str = "timestamp"
    # The object holding channel and setting values by their own names (None: the
    # payload itself), e.g. ``values`` for {"pump_id": .., "values": {"flow": ..}}.
    values: str | None = None
    # Channels or settings whose value is elsewhere or named otherwise: name → path.
    fields: dict[str, str] = Field(default_factory=dict)


class MqttConfig(BaseModel):
    """The site's broker: readings in on ``topics``, alarms, pump state and the agent's
    health out under ``prefix`` (retained)."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    # The broker keeps this client's session (its subscriptions and the QoS 1 messages
    # not yet acknowledged) across disconnects and restarts: it must be stable.
    client_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]{1,64}$")
    username: str | None = None
    password_file: Path | None = None
    tls: bool = False
    ca_file: Path | None = None
    topics: list[str] = Field(default_factory=lambda: ["pumps/+/readings"], min_length=1)
    qos: Literal[0, 1] = 1
    payload: PayloadMap = Field(default_factory=PayloadMap)
    # Topics published under; None: pumpfleet/<device_id>.
    prefix: str | None = None
    # A pump's retained state is published when its alarm changes, else at most this often.
    state_interval_seconds: float = Field(default=30.0, ge=0)
    # Readings are scored in batches: when the oldest waited batch_seconds, when none has
    # come for quiet_seconds, or as soon as batch_max wait (the broker sends at most its
    # max_inflight_messages, 20 by default, before they are acknowledged).
    batch_seconds: float = Field(default=0.25, gt=0)
    quiet_seconds: float = Field(default=0.05, gt=0)
    batch_max: int = Field(default=20, ge=1)
    # A message larger than this is set aside unread.
    max_payload_bytes: int = Field(default=65536, ge=64)
    keepalive_seconds: int = Field(default=30, ge=5)


class AgentConfig(BaseModel):
    """Where the agent keeps its state, which key signs its bundles, and where (if
    anywhere) it uploads."""

    model_config = ConfigDict(extra="forbid")

    device_id: str = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")
    # Where the device is and which class it scores, for the fleet's view and rollouts
    # (the class of its bundle once it has one).
    site: str | None = Field(default=None, max_length=128)
    pump_class: str | None = Field(default=None, max_length=64)
    # Everything the agent writes: store.db, bundles/, profile.json; spool/ and
    # updates/ by default.
    state_dir: Path
    # The ed25519 public key bundles must be signed with: hex, or a file holding it. It is
    # the trust anchor (pumpfleet.trust's implicit root v0) unless root_file is given.
    public_key: str
    # A signed root (root.json) flashed as the trust anchor instead: its roles' keys and
    # thresholds. Newer roots, signed by the old, reach the device later by themselves.
    root_file: Path | None = None
    # Folder the pump controller writes reading files into (CSV or JSON lines, written
    # under a dot-name and renamed when complete); done/ and bad/ are made inside it.
    spool_dir: Path | None = None
    # Folder new bundles arrive in (over the air, or copied by hand).
    updates_dir: Path | None = None
    # A bundle to install at first start when none is installed yet.
    initial_bundle: Path | None = None
    # Cloud endpoint (``https://host``; the agent POSTs to <endpoint>/v1/edge/upload);
    # none: offline only.
    endpoint: str | None = None
    api_key: str | None = None
    api_key_file: Path | None = None
    upload_batch: int = Field(default=200, ge=1, le=10_000)
    upload_timeout_seconds: float = Field(default=10.0, gt=0)
    backoff_seconds: float = Field(default=1.0, gt=0)
    backoff_max_seconds: float = Field(default=300.0, gt=0)
    heartbeat_seconds: float = Field(default=60.0, gt=0)
    # Pull a signed assignment (which bundle to run) from <endpoint>/v1/edge/assignment
    # this often, and run what it says (staged rollouts); off: bundles come only through
    # updates_dir.
    assignments: bool = False
    assignment_poll_seconds: float = Field(default=300.0, gt=0)
    # Bytes of buffered records above which routine predictions are thinned.
    quota_mb: float = Field(default=64.0, gt=0)
    poll_seconds: float = Field(default=1.0, gt=0)
    # A spool file larger than this goes to bad/ unread (a runaway writer, not readings).
    spool_max_file_mb: float = Field(default=16.0, gt=0)
    # Rollback: after a switch, the new model is on probation for this many windows; a
    # scoring error rate above the threshold in that time rolls it back.
    probation_windows: int = Field(default=200, ge=1)
    rollback_error_rate: float = Field(default=0.05, ge=0, le=1)
    rollback_min_windows: int = Field(default=20, ge=1)
    # Force a model variant (fp32, fp32_b1, fp16, int8); none: the profiler's choice,
    # else fp32.
    variant: str | None = None
    # Override of the bundle's alert threshold on the failure probability.
    alert_threshold: float | None = Field(default=None, gt=0, lt=1)
    threads: int = Field(default=1, ge=1)
    # onnxruntime providers; "auto": TensorRT (engines cached under state_dir/engines),
    # then CUDA, then CPU, as installed.
    providers: str = Field(default="auto", pattern="^(auto|cpu)$")
    # Explanations of alerts on the device (pumpfleet.explain): at most this many
    # milliseconds of them per scored batch; a pump's alert again after this many seconds
    # (a newly raised alarm is explained first).
    explain: bool = True
    explain_budget_ms: float = Field(default=100.0, ge=0)
    explain_every_seconds: float = Field(default=60.0, ge=0)
    # Readings over MQTT from the site's broker (beside the spool and stdin); none: off.
    mqtt: MqttConfig | None = None

    @field_validator("endpoint")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/") if value else value

    @property
    def spool(self) -> Path:
        return self.spool_dir or self.state_dir / "spool"

    @property
    def updates(self) -> Path:
        return self.updates_dir or self.state_dir / "updates"

    @property
    def spool_max_file_bytes(self) -> int:
        return int(self.spool_max_file_mb * 2**20)

    @property
    def quota_bytes(self) -> int:
        return int(self.quota_mb * 2**20)

    def key(self) -> str:
        """The public key as hex (read from its file where one is named)."""
        path = Path(self.public_key)
        return path.read_text().strip() if path.is_file() else self.public_key.strip()

    @property
    def mqtt_prefix(self) -> str:
        """The topic prefix alarms, pump state and health are published under."""
        found = self.mqtt.prefix if self.mqtt else None
        return (found or f"pumpfleet/{self.device_id}").rstrip("/")

    def trust_anchor(self) -> Root:
        """The root this device trusts before any other reaches it: ``root_file``'s
        (it must carry a threshold of its own root keys' signatures), else the
        implicit root of ``public_key``."""
        if self.root_file is None:
            key = self.key()
            if not re.fullmatch(r"[0-9a-fA-F]{64}", key):
                raise InputError(
                    "public_key: an ed25519 public key is 64 hex digits, or a file of them"
                )
            return implicit_root(key)
        try:
            envelope = json.loads(self.root_file.read_text())
        except (OSError, ValueError) as e:
            raise InputError(f"root_file {self.root_file}: not readable JSON ({e})") from None
        root = parse_root(envelope.get("signed") if isinstance(envelope, dict) else None)
        verify(
            envelope, root.role_keys("root"), root.threshold("root"), f"root_file v{root.version}"
        )
        return root

    def upload_key(self) -> str | None:
        if self.api_key_file is not None:
            return self.api_key_file.read_text().strip()
        return self.api_key


def load_config(path: Path) -> AgentConfig:
    """Read and validate the config (YAML needs PyYAML; JSON always works)."""
    if not path.is_file():
        raise InputError(f"--config {path}: no such file")
    text = path.read_text()
    data: Any
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ModuleNotFoundError:
            raise InputError(f"--config {path}: YAML needs PyYAML; or give JSON") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise InputError(f"--config {path}: not valid YAML: {str(e).splitlines()[0]}") from None
    else:
        try:
            data = json.loads(text)
        except ValueError as e:
            raise InputError(f"--config {path}: not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise InputError(f"--config {path}: expected a mapping of settings")
    try:
        return AgentConfig.model_validate(data)
    except ValidationError as e:
        raise InputError(f"--config {path}: {one_line(e)}") from None
