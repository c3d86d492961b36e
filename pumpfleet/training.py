"""The training loop: plain PyTorch over numpy arrays, no Ray. Ray Tune calls
``fit`` once per trial; tests call it directly.

Deterministic on CPU: the same data, config and seed (and thread count) give the same
weights and metrics, and a run resumed from an epoch's state ends where an uninterrupted
one does.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, Field
from torch import nn

from pumpfleet.errors import PumpfleetError
from pumpfleet.features import FeatureSpec, decode_outputs
from pumpfleet.metrics import regression_report
from pumpfleet.models import Ensemble, ModelConfig, build_model

log = logging.getLogger(__name__)


class TrainingDiverged(PumpfleetError):
    """The loss became NaN or infinite: the trial failed (too high a learning rate, or
    non-finite inputs)."""


class TrainConfig(BaseModel):
    model: ModelConfig = Field(default_factory=ModelConfig)
    lr: float = Field(default=3e-3, gt=0, lt=1)
    epochs: int = Field(default=8, ge=1, le=1000)
    batch_size: int = Field(default=128, ge=1)
    weight_decay: float = Field(default=1e-4, ge=0)
    failure_loss_weight: float = Field(default=0.5, ge=0)
    seed: int = 0
    # Learning rate over the epochs: constant, or cosine decay from ``lr`` to 1% of it
    # (stepped per batch), which makes the last epochs settle instead of bounce.
    schedule: Literal["constant", "cosine"] = "cosine"
    # Gradients are clipped to this global norm (None: never): one bad batch cannot throw
    # the weights far.
    clip_grad_norm: float | None = Field(default=1.0, gt=0)
    # Gaussian noise (in standard deviations) added to each training window: sensor
    # noise the model must not fit (0: none).
    noise_std: float = Field(default=0.0, ge=0)
    # Evaluate, checkpoint and return an exponential moving average of the weights
    # (this decay per step; None: the weights themselves): an average over the last few
    # hundred steps scores steadier than any single step.
    ema_decay: float | None = Field(default=None, gt=0, lt=1)
    # Stop when validation RMSE has not improved for this many epochs (None: run all).
    patience: int | None = Field(default=None, ge=1)
    # Return the weights of the epoch with the best validation RMSE, not the last.
    restore_best: bool = False


@dataclass
class Arrays:
    """Standardised windows with their labels."""

    x: np.ndarray  # [N, W, C] float32
    rul: np.ndarray  # [N] hours
    failure: np.ndarray  # [N] 0/1

    def __len__(self) -> int:
        return len(self.x)


# on_epoch(epoch, val_report, model, state): ``state`` is everything ``fit(resume=...)``
# needs to go on after that epoch (weights, optimiser, random generators).
EpochCallback = Callable[[int, dict[str, float | None], nn.Module, dict[str, Any]], None]


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


def _lr_factor(cfg: TrainConfig, step: int, total: int) -> float:
    if cfg.schedule == "constant" or total <= 1:
        return 1.0
    return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))


def fit(
    train: Arrays,
    val: Arrays,
    spec: FeatureSpec,
    cfg: TrainConfig,
    on_epoch: EpochCallback | None = None,
    resume: dict[str, Any] | None = None,
) -> tuple[nn.Module, dict[str, float | None]]:
    """Train one model; returns it with its validation report (of the last epoch, or of
    the best with ``cfg.restore_best``).

    ``on_epoch(epoch, val_report, model, state)`` is called after every epoch (Ray Tune
    reports and checkpoints from there); ``resume`` is such a ``state``, to go on after
    its epoch. Raises :class:`TrainingDiverged` when the loss is not finite.
    """
    if len(train) == 0:
        raise TrainingDiverged("no training windows")
    if cfg.model.kind == "gbm":  # boosted trees train by LightGBM's own loop
        from pumpfleet.boosting import fit_boosted

        return fit_boosted(train, val, spec, cfg, on_epoch, resume)
    # The caller's random state is left as it was: training draws from its own.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return _fit(train, val, spec, cfg, on_epoch, resume)


def _fit(
    train: Arrays,
    val: Arrays,
    spec: FeatureSpec,
    cfg: TrainConfig,
    on_epoch: EpochCallback | None,
    resume: dict[str, Any] | None,
) -> tuple[nn.Module, dict[str, float | None]]:
    rng = np.random.default_rng(cfg.seed)
    model = build_model(spec.n_channels, cfg.model)
    # A blend's trees are fitted first; the loop below trains its network.
    net = model
    if cfg.model.blend_gbm:
        from pumpfleet.boosting import fit_trees

        net = model.net  # type: ignore[assignment]
        if resume is None:
            fit_trees(model, train, val, spec, cfg)  # type: ignore[arg-type]
    # What is evaluated, checkpointed and returned: the weights, or their moving average.
    scored = copy.deepcopy(model) if cfg.ema_decay is not None else model
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    start, step = 1, 0
    best: dict[str, Any] = {"rmse": math.inf, "epoch": 0, "weights": None, "report": {}}
    if resume is not None:
        model.load_state_dict(resume["model"])
        scored.load_state_dict(resume.get("scored", resume["model"]))
        opt.load_state_dict(resume["optimizer"])
        rng.bit_generator.state = resume["numpy_rng"]
        torch.set_rng_state(resume["torch_rng"])
        start, step, best = resume["epoch"] + 1, resume["step"], dict(resume["best"])
    x = torch.from_numpy(train.x)
    y_rul = torch.from_numpy((train.rul / spec.rul_cap_hours).astype(np.float32))
    y_fail = torch.from_numpy(train.failure.astype(np.float32))
    report: dict[str, float | None] = dict(best["report"])
    for epoch in range(start, cfg.epochs + 1):
        model.train()
        total = 0.0
        for idx in _batches(len(train), cfg.batch_size, rng):
            for group in opt.param_groups:
                group["lr"] = cfg.lr * _lr_factor(cfg, step, total_steps)
            t = torch.from_numpy(idx)
            xb = x[t]
            if cfg.noise_std > 0:
                xb = xb + cfg.noise_std * torch.randn_like(xb)
            loss = _loss(net, xb, y_rul[t], y_fail[t], cfg.failure_loss_weight)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise TrainingDiverged(
                    f"training diverged in epoch {epoch}: the loss became {value} "
                    f"(learning rate {cfg.lr:g}; try a lower one)"
                )
            opt.zero_grad()
            loss.backward()
            if cfg.clip_grad_norm is not None:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad_norm)
            opt.step()
            step += 1
            if cfg.ema_decay is not None:
                _ema_update(scored, model, min(cfg.ema_decay, (1 + step) / (10 + step)))
            total += value * len(idx)
        report = evaluate(scored, val, spec)
        report["train_loss"] = total / len(train)
        rmse = report["rmse"]
        if rmse is not None and rmse < best["rmse"]:
            weights = copy.deepcopy(scored.state_dict())
            best = {"rmse": rmse, "epoch": epoch, "weights": weights, "report": dict(report)}
        report["best_epoch"] = float(best["epoch"])
        log.debug("epoch %d: %s", epoch, report)
        if on_epoch is not None:
            on_epoch(epoch, report, scored, _state(model, scored, opt, rng, epoch, step, best))
        if cfg.patience is not None and epoch - best["epoch"] >= cfg.patience:
            log.info("early stop after epoch %d (best %d)", epoch, best["epoch"])
            break
    if cfg.restore_best and best["weights"] is not None:
        scored.load_state_dict(best["weights"])
        report = {**best["report"], "best_epoch": float(best["epoch"])}
    scored.eval()
    return scored, report


def _ema_update(average: nn.Module, model: nn.Module, decay: float) -> None:
    with torch.no_grad():
        for a, w in zip(average.parameters(), model.parameters(), strict=True):
            a.mul_(decay).add_(w, alpha=1.0 - decay)


def _loss(
    model: nn.Module, x: torch.Tensor, rul: torch.Tensor, fail: torch.Tensor, weight: float
) -> torch.Tensor:
    """MSE of the RUL fraction plus ``weight`` times BCE of the failure head; an
    ensemble's members each on their own (the mean is taken), so that they do not
    co-adapt."""
    # [M, B, 2]: one row of pre-activations per member (one for a single model).
    single = not isinstance(model, Ensemble)
    raw = model.raw(x)[None] if single else model.member_raw(x)  # type: ignore[operator]
    m = raw.shape[0]
    mse = nn.functional.mse_loss(torch.sigmoid(raw[..., 0]), rul.expand(m, -1))
    bce = nn.functional.binary_cross_entropy_with_logits(raw[..., 1], fail.expand(m, -1))
    return mse + weight * bce


def _state(
    model: nn.Module,
    scored: nn.Module,
    opt: torch.optim.Optimizer,
    rng: np.random.Generator,
    epoch: int,
    step: int,
    best: dict[str, Any],
) -> dict[str, Any]:
    # A copy: the live tensors change with the next step.
    return copy.deepcopy(
        {
            "epoch": epoch,
            "step": step,
            "model": model.state_dict(),
            "scored": scored.state_dict(),
            "optimizer": opt.state_dict(),
            "numpy_rng": rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
            "best": best,
        }
    )
