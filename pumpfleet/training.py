"""The training loop: plain PyTorch over numpy arrays, no Ray. Ray Tune calls
``fit`` once per trial; tests call it directly."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from pydantic import BaseModel, Field
from torch import nn

from pumpfleet.features import FeatureSpec, decode_outputs
from pumpfleet.metrics import regression_report
from pumpfleet.models import ModelConfig, build_model

log = logging.getLogger(__name__)


class TrainConfig(BaseModel):
    model: ModelConfig = Field(default_factory=ModelConfig)
    lr: float = Field(default=3e-3, gt=0, lt=1)
    epochs: int = Field(default=8, ge=1, le=1000)
    batch_size: int = Field(default=128, ge=1)
    weight_decay: float = Field(default=1e-4, ge=0)
    failure_loss_weight: float = Field(default=0.5, ge=0)
    seed: int = 0


@dataclass
class Arrays:
    """Standardised windows with their labels."""

    x: np.ndarray  # [N, W, C] float32
    rul: np.ndarray  # [N] hours
    failure: np.ndarray  # [N] 0/1

    def __len__(self) -> int:
        return len(self.x)


EpochCallback = Callable[[int, dict[str, float | None], nn.Module], None]


def _batches(n: int, size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    order = rng.permutation(n)
    for i in range(0, n, size):
        yield order[i : i + size]


def predict(model: nn.Module, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """Model outputs ``[N, 2]`` for standardised windows, in eval mode."""
    model.eval()
    outs = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            outs.append(model(torch.from_numpy(x[i : i + batch_size])).numpy())
    return np.concatenate(outs) if outs else np.zeros((0, 2), dtype=np.float32)


def evaluate(model: nn.Module, data: Arrays, spec: FeatureSpec) -> dict[str, float | None]:
    rul, prob = decode_outputs(predict(model, data.x), spec)
    return regression_report(rul, data.rul, prob, data.failure)


def fit(
    train: Arrays,
    val: Arrays,
    spec: FeatureSpec,
    cfg: TrainConfig,
    on_epoch: EpochCallback | None = None,
) -> tuple[nn.Module, dict[str, float | None]]:
    """Train one model; returns it with its validation report of the last epoch.

    ``on_epoch(epoch, val_report, model)`` is called after every epoch (Ray Tune reports
    and checkpoints from there).
    """
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = build_model(spec.n_channels, cfg.model)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    x = torch.from_numpy(train.x)
    y_rul = torch.from_numpy((train.rul / spec.rul_cap_hours).astype(np.float32))
    y_fail = torch.from_numpy(train.failure.astype(np.float32))
    bce = nn.BCEWithLogitsLoss()
    report: dict[str, float | None] = {}
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        total = 0.0
        for idx in _batches(len(train), cfg.batch_size, rng):
            t = torch.from_numpy(idx)
            raw = model.raw(x[t])  # type: ignore[operator]
            loss = nn.functional.mse_loss(torch.sigmoid(raw[:, 0]), y_rul[t])
            loss = loss + cfg.failure_loss_weight * bce(raw[:, 1], y_fail[t])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        report = evaluate(model, val, spec)
        report["train_loss"] = total / max(1, len(train))
        log.debug("epoch %d: %s", epoch, report)
        if on_epoch is not None:
            on_epoch(epoch, report, model)
    return model, report
