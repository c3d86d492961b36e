"""Small PyTorch models over feature windows, sized for an edge device.

Every model maps ``[B, W, C]`` standardised windows to ``[B, 2]``: the remaining useful
life as a fraction of the cap, and the probability of failure within the horizon.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel, Field
from torch import nn


class ModelConfig(BaseModel):
    kind: str = Field(default="cnn", pattern="^(cnn)$")
    hidden: int = Field(default=32, ge=4, le=512)
    kernel: int = Field(default=5, ge=1, le=31)
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)


class TemporalCNN(nn.Module):
    """Two 1-D convolutions over time, pooled, with a RUL head and a failure head."""

    def __init__(self, n_channels: int, cfg: ModelConfig) -> None:
        super().__init__()
        h = cfg.hidden
        self.body = nn.Sequential(
            nn.Conv1d(n_channels, h, cfg.kernel, padding=cfg.kernel // 2),
            nn.ReLU(),
            nn.Conv1d(h, h, 3, padding=1),
            nn.ReLU(),
        )
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(2 * h, 2)

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        """Logits / pre-activations ``[B, 2]`` (used by the training loss)."""
        z = self.body(x.transpose(1, 2))
        pooled = torch.cat([z.mean(dim=2), z[:, :, -1]], dim=1)
        return self.head(self.dropout(pooled))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.raw(x)
        return torch.stack([torch.sigmoid(r[:, 0]), torch.sigmoid(r[:, 1])], dim=1)


def build_model(n_channels: int, cfg: ModelConfig) -> nn.Module:
    return TemporalCNN(n_channels, cfg)


def model_size_bytes(model: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def describe(model: nn.Module) -> dict[str, Any]:
    return {
        "class": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "bytes": model_size_bytes(model),
    }
