"""What the training jobs search, as data: the RUL model's grid per pump class with its
ASHA early stopping (``--config FILE``), the anomaly (health) model's grid with how its
winner is calibrated and gated, and each trial's config and seed from a point of the grid.
The grids are written in Tune's grid-search form, as plain data: the core never imports
Ray, and ``ray_jobs.train`` hands them to Tune as they are.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pumpfleet.anomaly import AnomalyConfig
from pumpfleet.errors import InputError, one_line
from pumpfleet.health import AnomalyGate
from pumpfleet.models import ModelConfig
from pumpfleet.training import TrainConfig

MODEL_KEYS = set(ModelConfig.model_fields)


def grid_search(values: list[Any]) -> dict[str, list[Any]]:
    """``values`` as one dimension of a Tune grid: what ``ray.tune.grid_search`` returns."""
    return {"grid_search": values}


class Asha(BaseModel):
    """ASHA early stopping, per class: a trial is stopped at a rung (every
    ``grace_period * reduction_factor^k`` epochs) unless it is in the top
    ``1/reduction_factor`` of its class's trials there."""

    model_config = ConfigDict(extra="forbid")
    grace_period: int = Field(default=2, ge=1)
    reduction_factor: float = Field(default=2.0, gt=1)


class SearchSpace(BaseModel):
    """One search per pump class, as data (``--config FILE``, YAML or JSON). Every list
    is a grid; ``samples`` repeats the grid with different seeds."""

    model_config = ConfigDict(extra="forbid")
    kind: list[str] = Field(default=["cnn"], min_length=1)
    lr: list[Annotated[float, Field(gt=0, lt=1)]] = Field(default=[3e-3, 1e-2], min_length=1)
    hidden: list[Annotated[int, Field(ge=4, le=512)]] = Field(default=[32], min_length=1)
    dropout: list[Annotated[float, Field(ge=0, lt=1)]] = Field(default=[0.1], min_length=1)
    batch_size: list[Annotated[int, Field(ge=1)]] = Field(default=[128], min_length=1)
    # Seed ensembles: each value a model of that many independently seeded members whose
    # outputs are averaged (1: a single model).
    members: list[Annotated[int, Field(ge=1, le=16)]] = Field(default=[1], min_length=1)
    # Early stopping on the validation windows: stop a trial after this many epochs (a
    # booster: rounds) without a better validation RMSE (None: run every epoch; boosters
    # then stop after 100 rounds), and keep its best epoch's weights.
    patience: int | None = Field(default=None, ge=1)
    restore_best: bool = False
    # Further ModelConfig fields to search, e.g. {"kernel": [3, 5]}.
    architecture: dict[str, list[Any]] = Field(default_factory=dict)
    samples: int = Field(default=1, ge=1)
    epochs: int = Field(default=8, ge=1)
    seed: int = 0
    metric: str = "rmse"  # validation metric to minimise (rmse, mae, phm08)
    asha: Asha = Field(default_factory=Asha)

    @model_validator(mode="after")
    def _models_are_valid(self) -> SearchSpace:
        for model in self.model_grid():
            try:
                ModelConfig(**model)
            except ValidationError as e:
                raise ValueError(f"model {model}: {one_line(e)}") from None
        if self.metric not in ("rmse", "mae", "phm08"):
            raise ValueError(f"metric must be rmse, mae or phm08, got {self.metric!r}")
        return self

    def model_grid(self) -> list[dict[str, Any]]:
        grid: dict[str, list[Any]] = {
            "kind": self.kind,
            "hidden": self.hidden,
            "dropout": self.dropout,
            "members": self.members,
            **self.architecture,
        }
        unknown = set(grid) - MODEL_KEYS
        if unknown:
            raise ValueError(f"architecture: unknown model field {sorted(unknown)[0]!r}")
        keys = sorted(grid)
        return [
            dict(zip(keys, v, strict=True)) for v in itertools.product(*(grid[k] for k in keys))
        ]

    @property
    def trials_per_class(self) -> int:
        return len(self.model_grid()) * len(self.lr) * len(self.batch_size) * self.samples

    def param_space(self, classes: list[str]) -> dict[str, Any]:
        grid: dict[str, list[Any]] = {
            "pump_class": classes,
            "lr": self.lr,
            "batch_size": self.batch_size,
            "sample": list(range(self.samples)),
            "kind": self.kind,
            "hidden": self.hidden,
            "dropout": self.dropout,
            "members": self.members,
            **self.architecture,
        }
        space: dict[str, Any] = {k: grid_search(v) for k, v in grid.items()}
        fixed = {"epochs": self.epochs, "seed": self.seed, "metric": self.metric}
        if self.patience is not None:
            fixed["patience"] = self.patience
        if self.restore_best:
            fixed["restore_best"] = True
        return {**space, **fixed}

    @classmethod
    def from_file(cls, path: str, **overrides: Any) -> SearchSpace:
        import yaml

        try:
            text = Path(path).read_text()
        except OSError as e:
            raise InputError(f"--config {path}: {e.strerror or e}") from None
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise InputError(
                f"--config {path}: not YAML or JSON ({str(e).splitlines()[0]})"
            ) from None
        if not isinstance(data, dict):
            raise InputError(f"--config {path}: expected a mapping of search settings")
        try:
            return cls.model_validate({**data, **overrides})
        except ValidationError as e:
            raise InputError(f"--config {path}: {one_line(e)}") from None


def config_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def trial_seed(config: dict[str, Any]) -> int:
    """A trial's seed: the search's, moved by the repeat (``sample``) it belongs to."""
    return int(config.get("seed", 0)) + 1000 * int(config.get("sample", 0))


def train_config(config: dict[str, Any]) -> tuple[ModelConfig, TrainConfig]:
    model_cfg = ModelConfig(**{k: v for k, v in config.items() if k in MODEL_KEYS})
    cfg = TrainConfig(
        model=model_cfg,
        lr=config["lr"],
        epochs=config["epochs"],
        batch_size=config.get("batch_size", TrainConfig().batch_size),
        seed=trial_seed(config),
        patience=config.get("patience"),
        restore_best=bool(config.get("restore_best", False)),
    )
    return model_cfg, cfg


def space_from_args(args: argparse.Namespace) -> SearchSpace:
    overrides = {k: v for k, v in (("epochs", args.epochs), ("seed", args.seed)) if v is not None}
    if args.config:
        return SearchSpace.from_file(args.config, **overrides)
    try:
        return SearchSpace(**overrides)
    except ValidationError as e:
        raise InputError(one_line(e)) from None


# --- anomaly (health) models ---------------------------------------------------------


class AnomalySearchSpace(BaseModel):
    """The conv-AE search per class (a grid over every list) and how its winner is
    calibrated and gated."""

    model_config = ConfigDict(extra="forbid")
    lr: list[Annotated[float, Field(gt=0, lt=1)]] = Field(default=[3e-3, 1e-2], min_length=1)
    hidden: list[Annotated[int, Field(ge=2, le=256)]] = Field(default=[16], min_length=1)
    latent: list[Annotated[int, Field(ge=1, le=128)]] = Field(default=[4], min_length=1)
    # The recent-level distance added to the reconstruction error (AnomalyConfig); 0: off.
    level_steps: int = Field(default=6, ge=0)
    epochs: int = Field(default=5, ge=1)
    batch_size: int = Field(default=64, ge=1)
    seed: int = 0
    target_far: float = Field(default=0.01, gt=0, lt=1)
    margin: float = Field(default=1.0, gt=0)
    gate: AnomalyGate = Field(default_factory=AnomalyGate)

    def param_space(self, classes: list[str]) -> dict[str, Any]:
        grid: dict[str, list[Any]] = {
            "pump_class": classes,
            "lr": self.lr,
            "hidden": self.hidden,
            "latent": self.latent,
        }
        space: dict[str, Any] = {k: grid_search(v) for k, v in grid.items()}
        fixed = {"epochs": self.epochs, "batch_size": self.batch_size, "seed": self.seed}
        return {**space, **fixed, "level_steps": self.level_steps}


def anomaly_config(config: dict[str, Any]) -> AnomalyConfig:
    keys = set(AnomalyConfig.model_fields)
    return AnomalyConfig(**{k: v for k, v in config.items() if k in keys})
