"""Unsupervised pump health (anomaly) models, trained on windows of normal operation only:
numpy and torch, no Ray.

- ``conv_ae``: a small 1-D convolutional autoencoder over standardised windows
  ``[B, W, C]`` (the feature path of :mod:`pumpfleet.features`). Its exported form,
  :class:`WindowError`, maps windows to their mean squared reconstruction error ``[B, 1]``,
  so the ONNX model that Serve and the edge run gives the error directly.
- ``pca``: the T²+Q baseline (numpy): principal components of the flattened training
  windows; a window's error is the larger of its Hotelling T² and its residual Q, each
  relative to its own 99th percentile on the training windows.

Errors become health scores and flags with :class:`pumpfleet.health.HealthSpec`,
calibrated on held-out normal windows (:func:`pumpfleet.health.calibrate`).

Deterministic on CPU: the same data, config and seed (and thread count) give the same
weights.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import numpy as np
import torch
from pydantic import BaseModel, Field
from torch import nn

from pumpfleet.errors import DataError
from pumpfleet.training import TrainingDiverged

log = logging.getLogger(__name__)

KINDS = ("conv_ae", "pca")


class AnomalyConfig(BaseModel):
    """The conv-AE and its training."""

    hidden: int = Field(default=16, ge=2, le=256)
    latent: int = Field(default=4, ge=1, le=128)  # channels at the bottleneck
    kernel: int = Field(default=5, ge=1, le=15)
    lr: float = Field(default=3e-3, gt=0, lt=1)
    epochs: int = Field(default=30, ge=1, le=1000)
    batch_size: int = Field(default=64, ge=1)
    weight_decay: float = Field(default=1e-4, ge=0)
    # Gaussian noise (standard deviations) added to inputs in training: a denoising AE
    # cannot learn the identity.
    noise_std: float = Field(default=0.0, ge=0)
    # Channels (indices) read relative to the window's own mean, rescaled to unit spread
    # on the training windows: slow channels (temperatures) whose level wanders further
    # in normal operation than any training period shows, while their shape within a
    # window still tells a fault.
    centred: list[int] = Field(default_factory=list)
    # 0: off. Else the mean of the window's last ``level_steps`` steps is compared with
    # the training windows' (Mahalanobis distance over the channels, per channel) and
    # added to the reconstruction error: an autoencoder reconstructs a pump whose levels
    # have all moved a little together (wear), which this distance sees.
    level_steps: int = Field(default=0, ge=0)
    seed: int = 0


class ConvAutoencoder(nn.Module):
    """Two strided convolutions down to ``latent`` channels at a quarter of the steps,
    two transposed convolutions back; the output is cropped to the input's length."""

    def __init__(self, n_channels: int, cfg: AnomalyConfig) -> None:
        super().__init__()
        h, k = cfg.hidden, cfg.kernel
        self.encoder = nn.Sequential(
            nn.Conv1d(n_channels, h, k, stride=2, padding=k // 2),
            nn.ReLU(),
            nn.Conv1d(h, cfg.latent, k, stride=2, padding=k // 2),
            nn.ReLU(),
        )
        self.up1 = nn.ConvTranspose1d(cfg.latent, h, 4, stride=2, padding=1)
        self.up2 = nn.ConvTranspose1d(h, n_channels, 4, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``[B, W, C]`` of windows ``[B, W, C]``."""
        w = x.shape[1]
        z = self.encoder(x.transpose(1, 2))
        y = self.up2(torch.relu(self.up1(z)))  # 4 * ceil(ceil(W / 2) / 2) >= W steps
        return y[:, :, :w].transpose(1, 2)


class WindowError(nn.Module):
    """Windows ``[B, W, C]`` → mean squared reconstruction error ``[B, 1]`` (what is
    exported to ONNX and scored by :class:`pumpfleet.health.HealthSpec`). The ``centred``
    channels are read relative to the window's mean (:meth:`prepare`) inside the model,
    so the ONNX does the same."""

    centre_mask: torch.Tensor
    centre_scale: torch.Tensor
    level_mean: torch.Tensor
    level_whiten: torch.Tensor

    def __init__(
        self,
        autoencoder: ConvAutoencoder,
        n_channels: int = 0,
        centred: list[int] | None = None,
        level_steps: int = 0,
    ) -> None:
        super().__init__()
        self.autoencoder = autoencoder
        self.centred = list(centred or [])
        self.level_steps = level_steps
        # Buffers only where used: earlier versions' state dicts have none.
        if self.centred:
            mask = torch.zeros(n_channels)
            mask[self.centred] = 1.0
            self.register_buffer("centre_mask", mask)
            self.register_buffer("centre_scale", torch.ones(n_channels))
        if level_steps:
            self.register_buffer("level_mean", torch.zeros(n_channels))
            self.register_buffer("level_whiten", torch.eye(n_channels))

    def level(self, x: torch.Tensor) -> torch.Tensor:
        """Mean of the last ``level_steps`` steps per channel ``[B, C]``."""
        return x[:, -self.level_steps :, :].mean(dim=1)

    def fit_level(self, x: np.ndarray) -> None:
        """The training windows' recent levels: their mean and a whitening matrix (the
        Cholesky factor of the inverse covariance, shrunk towards its diagonal)."""
        if not self.level_steps:
            return
        with torch.no_grad():
            lv = self.level(torch.from_numpy(np.asarray(x, dtype=np.float32))).double()
            mean = lv.mean(dim=0)
            cov = torch.cov((lv - mean).T).reshape(len(mean), len(mean))
            cov = 0.9 * cov + 0.1 * torch.diag(torch.diagonal(cov)) + 1e-4 * torch.eye(len(mean))
            whiten = torch.linalg.cholesky(torch.linalg.inv(cov))
            self.level_mean.copy_(mean.float())
            self.level_whiten.copy_(whiten.float())

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """What the autoencoder reads: ``x`` with the centred channels relative."""
        if not self.centred:
            return x
        relative = (x - x.mean(dim=1, keepdim=True)) * self.centre_scale
        return x + (relative - x) * self.centre_mask

    def fit_centring(self, x: np.ndarray) -> None:
        """Scale the centred channels to unit spread over training windows ``x``."""
        if not self.centred:
            return
        with torch.no_grad():
            t = torch.from_numpy(np.asarray(x, dtype=np.float32))
            spread = (t - t.mean(dim=1, keepdim=True)).std(dim=(0, 1))
            self.centre_scale.copy_(1.0 / torch.clamp(spread, min=1e-3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prepare(x)
        d = self.autoencoder(x) - x
        error = (d * d).mean(dim=(1, 2))
        if self.level_steps:
            # In float64: a worn window's distance runs to the hundreds, where one float32
            # step is above the 1e-5 parity limit and torch and onnxruntime multiply in
            # other orders; rounded once at the end, both give the same float32.
            z = (self.level(x.double()) - self.level_mean.double()) @ self.level_whiten.double()
            error = (error.double() + (z * z).mean(dim=1)).float()
        return error.unsqueeze(1)


def build_autoencoder(n_channels: int, cfg: AnomalyConfig) -> WindowError:
    return WindowError(ConvAutoencoder(n_channels, cfg), n_channels, cfg.centred, cfg.level_steps)


# on_epoch(epoch, report, model)
AnomalyEpochCallback = Callable[[int, dict[str, float], WindowError], None]


def fit_autoencoder(
    train: np.ndarray,
    val: np.ndarray | None,
    cfg: AnomalyConfig,
    on_epoch: AnomalyEpochCallback | None = None,
) -> tuple[WindowError, dict[str, float]]:
    """Train a conv-AE on standardised normal windows ``[N, W, C]``; returns it (in eval
    mode) with the last epoch's ``train_loss`` and ``val_loss`` (mean window error on
    ``val``, where given)."""
    if len(train) == 0:
        raise DataError("no normal windows to train the anomaly model on")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return _fit(np.asarray(train, np.float32), val, cfg, on_epoch)


def _fit(
    train: np.ndarray,
    val: np.ndarray | None,
    cfg: AnomalyConfig,
    on_epoch: AnomalyEpochCallback | None,
) -> tuple[WindowError, dict[str, float]]:
    rng = np.random.default_rng(cfg.seed)
    model = build_autoencoder(train.shape[-1], cfg)
    model.fit_centring(train)
    model.fit_level(train)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    x = torch.from_numpy(train)
    total_steps = cfg.epochs * math.ceil(len(train) / cfg.batch_size)
    step = 0
    report: dict[str, float] = {}
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        total = 0.0
        for idx in np.array_split(
            rng.permutation(len(train)), math.ceil(len(train) / cfg.batch_size)
        ):
            for group in opt.param_groups:  # cosine decay to 1% of lr
                group["lr"] = cfg.lr * (
                    0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * step / total_steps))
                )
            xb = model.prepare(x[torch.from_numpy(idx)])
            noisy = xb + cfg.noise_std * torch.randn_like(xb) if cfg.noise_std > 0 else xb
            loss = ((model.autoencoder(noisy) - xb) ** 2).mean()
            value = float(loss.detach())
            if not math.isfinite(value):
                raise TrainingDiverged(
                    f"anomaly model diverged in epoch {epoch} (learning rate {cfg.lr:g})"
                )
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            total += value * len(idx)
        report = {"train_loss": total / len(train)}
        if val is not None and len(val):
            report["val_loss"] = float(window_errors(model, val).mean())
        log.debug("epoch %d: %s", epoch, report)
        if on_epoch is not None:
            on_epoch(epoch, report, model)
    model.eval()
    return model, report


def window_errors(model: WindowError, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """Per-window reconstruction error ``[N]`` of standardised windows ``[N, W, C]``."""
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            xb = torch.from_numpy(np.asarray(x[i : i + batch_size], dtype=np.float32))
            out.append(model(xb).numpy()[:, 0])
    return np.concatenate(out).astype(np.float64) if out else np.zeros(0)


def model_bytes(model: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


# --- the PCA T²+Q baseline ------------------------------------------------------------


class PCAModel(BaseModel):
    """Principal components of flattened normal windows, with the T² and Q levels that
    the window error is measured against (JSON-serialisable: it is its own artefact)."""

    mean: list[float]
    components: list[list[float]]  # [k, W * C]
    variances: list[float]  # [k]
    t2_ref: float = Field(gt=0)
    q_ref: float = Field(gt=0)

    def errors(self, x: np.ndarray) -> np.ndarray:
        """max(T² / T²_ref, Q / Q_ref) of each window ``[N, W, C]``."""
        flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1) - np.asarray(self.mean)
        p = np.asarray(self.components)
        t = flat @ p.T
        t2 = (t * t / np.asarray(self.variances)).sum(axis=1)
        r = flat - t @ p
        q = (r * r).sum(axis=1)
        return np.maximum(t2 / self.t2_ref, q / self.q_ref)


def fit_pca(x: np.ndarray, explained: float = 0.9, ref_quantile: float = 0.99) -> PCAModel:
    """PCA T²+Q on normal windows ``[N, W, C]``, keeping the components that explain
    ``explained`` of the variance."""
    if len(x) < 3:
        raise DataError(f"{len(x)} normal windows: PCA needs at least 3")
    flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    mean = flat.mean(axis=0)
    _, s, vt = np.linalg.svd(flat - mean, full_matrices=False)
    var = s**2 / (len(flat) - 1)
    total = var.sum()
    k = int(np.searchsorted(np.cumsum(var) / total, explained) + 1) if total > 0 else 1
    k = min(k, len(var))
    var_k = np.maximum(var[:k], 1e-12)
    p = vt[:k]
    t = (flat - mean) @ p.T
    t2 = (t * t / var_k).sum(axis=1)
    r = (flat - mean) - t @ p
    q = (r * r).sum(axis=1)
    return PCAModel(
        mean=mean.tolist(),
        components=p.tolist(),
        variances=var_k.tolist(),
        t2_ref=max(float(np.quantile(t2, ref_quantile)), 1e-12),
        q_ref=max(float(np.quantile(q, ref_quantile)), 1e-12),
    )
