"""Engineered features of a standardised window, as a torch module: what the
gradient-boosted model (:mod:`pumpfleet.boosting`) reads.

The same module computes the features when the booster trains and, exported to ONNX in
front of the trees, when Serve and the device score: they keep scoring raw windows through
:func:`pumpfleet.features.window_features` (per-regime z-scores) and an ONNX model that maps
``[N, W, C]`` to ``[N, 2]``, and nothing else has to know that a booster reads summaries.

Per channel, over the window: mean, standard deviation, least-squares slope per step,
minimum, maximum, the mean of the last ``tail`` steps and the slope over the last half.
Features are ordered statistic-major: all channels' means, then all standard deviations,
and so on (:func:`feature_names`).

They are computed in float64 and rounded to float32 at the end. Trees split between
neighbouring feature values, and in float32 the mean of the same window differs by one
step between torch and onnxruntime (they sum in other orders), which sends a window down
the other branch; in float64 the two agree to far below a float32 step, so the rounded
features are the same.
"""

from __future__ import annotations

import torch
from torch import nn

STATS = ("mean", "std", "slope", "min", "max", "tail_mean", "recent_slope")
NOISE = 1e-9  # |feature| below this is 0 (see forward)
TAIL = 5  # steps of "tail_mean": the latest level, with the noise of one step averaged


def _centred_steps(n: int) -> torch.Tensor:
    t = torch.arange(n, dtype=torch.float64)
    return t - t.mean()


class WindowStats(nn.Module):
    """Windows ``[N, W, C]`` → features ``[N, len(STATS) * C]``."""

    slope_w: torch.Tensor
    recent_w: torch.Tensor

    def __init__(self, window: int) -> None:
        super().__init__()
        self.window = window
        self.tail = min(TAIL, window)
        self.recent = max(2, window // 2)
        t = _centred_steps(window)
        h = _centred_steps(self.recent)
        # Slope weights: sum(t * x) / sum(t^2) over centred steps, as [1, W, 1] columns.
        self.register_buffer("slope_w", (t / (t * t).sum()).reshape(1, -1, 1), persistent=False)
        self.register_buffer("recent_w", (h / (h * h).sum()).reshape(1, -1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.double()
        mean = x.mean(dim=1)
        centred = x - mean.unsqueeze(1)
        std = torch.sqrt((centred * centred).mean(dim=1))
        slope = (x * self.slope_w).sum(dim=1)
        low = x.min(dim=1).values
        high = x.max(dim=1).values
        tail = x[:, -self.tail :, :].mean(dim=1)
        recent = (x[:, -self.recent :, :] * self.recent_w).sum(dim=1)
        f = torch.cat([mean, std, slope, low, high, tail, recent], dim=1)
        # The slope and spread of a constant channel are rounding noise (~1e-17) whose
        # sign and size depend on the order of the sums: zero them.
        return (f * (f.abs() >= NOISE)).float()


def feature_names(channels: list[str]) -> list[str]:
    """The name of each feature column, ``<stat>:<channel>``, in :class:`WindowStats`'s order."""
    return [f"{s}:{c}" for s in STATS for c in channels]
