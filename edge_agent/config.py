"""The agent's configuration: one YAML or JSON file, validated once at start."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pumpfleet.errors import InputError, one_line


class AgentConfig(BaseModel):
    """Where the agent keeps its state, which key signs its bundles, and where (if
    anywhere) it uploads."""

    model_config = ConfigDict(extra="forbid")

    device_id: str = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")
    # Everything the agent writes: store.db, bundles/, profile.json; spool/ and
    # updates/ by default.
    state_dir: Path
    # The ed25519 public key bundles must be signed with: hex, or a file holding it.
    public_key: str
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
