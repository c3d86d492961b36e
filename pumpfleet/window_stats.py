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

``multiscale`` (the gbm's ``stats="multiscale"``) adds, per channel, the mean and the
slope over the last 10, 20 and 30 steps (those shorter than the window) and exponentially
weighted means (weights falling by 0.9 and 0.7 a step back from the last): the recent
level and trend at several scales, so one window length serves units whose degradation
shows over fewer steps, and a test unit padded at the front (shorter than the window)
still has summaries computed on real readings only.

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
SCALES = (10, 20, 30)  # multiscale: steps of the recent means and slopes
DECAYS = (0.9, 0.7)  # multiscale: per-step weight ratios of the exponentially weighted means


def _centred_steps(n: int) -> torch.Tensor:
    t = torch.arange(n, dtype=torch.float64)
    return t - t.mean()


def _slope_weights(n: int) -> torch.Tensor:
    """Least-squares slope per step as weights on ``n`` steps: sum(t * x) / sum(t^2)."""
    t = _centred_steps(n)
    return t / (t * t).sum()


def stat_names(window: int, multiscale: bool = False) -> list[str]:
    """The statistics computed per channel, in order."""
    names = list(STATS)
    if multiscale:
        for k in SCALES:
            if k < window:
                names += [f"mean{k}", f"slope{k}"]
        names += [f"ewm{d}" for d in DECAYS]
    return names


class WindowStats(nn.Module):
    """Windows ``[N, W, C]`` → features ``[N, len(stat_names(L, multiscale)) * C]``, of
    the last ``lookback`` steps ``L`` (None: the whole window, ``L = W``)."""

    slope_w: torch.Tensor
    recent_w: torch.Tensor
    ewm_w: torch.Tensor

    def __init__(self, window: int, multiscale: bool = False, lookback: int | None = None) -> None:
        super().__init__()
        self.lookback = min(lookback, window) if lookback else None
        window = self.lookback or window
        self.window = window
        self.multiscale = multiscale
        self.tail = min(TAIL, window)
        self.recent = max(2, window // 2)
        # Slope weights over centred steps, as [1, W, 1] columns.
        self.register_buffer("slope_w", _slope_weights(window).reshape(1, -1, 1), persistent=False)
        self.register_buffer(
            "recent_w", _slope_weights(self.recent).reshape(1, -1, 1), persistent=False
        )
        self.scales = [k for k in SCALES if k < window] if multiscale else []
        for k in self.scales:
            self.register_buffer(
                f"slope{k}_w", _slope_weights(k).reshape(1, -1, 1), persistent=False
            )
        decays = DECAYS if multiscale else ()
        steps_back = torch.arange(window - 1, -1, -1, dtype=torch.float64)
        ewm = [d**steps_back for d in decays]
        # [1, W, D]: each column an exponentially weighted mean's weights, summing to 1.
        self.register_buffer(
            "ewm_w",
            torch.stack([w / w.sum() for w in ewm], dim=1).reshape(1, window, -1)
            if ewm
            else torch.zeros(1, window, 0, dtype=torch.float64),
            persistent=False,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.lookback is not None:
            x = x[:, -self.lookback :, :]
        x = x.double()
        mean = x.mean(dim=1)
        centred = x - mean.unsqueeze(1)
        std = torch.sqrt((centred * centred).mean(dim=1))
        slope = (x * self.slope_w).sum(dim=1)
        low = x.min(dim=1).values
        high = x.max(dim=1).values
        tail = x[:, -self.tail :, :].mean(dim=1)
        recent = (x[:, -self.recent :, :] * self.recent_w).sum(dim=1)
        parts = [mean, std, slope, low, high, tail, recent]
        for k in self.scales:
            last = x[:, -k:, :]
            parts += [last.mean(dim=1), (last * getattr(self, f"slope{k}_w")).sum(dim=1)]
        for d in range(self.ewm_w.shape[2]):
            parts.append((x * self.ewm_w[:, :, d : d + 1]).sum(dim=1))
        f = torch.cat(parts, dim=1)
        # The slope and spread of a constant channel are rounding noise (~1e-17) whose
        # sign and size depend on the order of the sums: zero them.
        return (f * (f.abs() >= NOISE)).float()


def feature_names(channels: list[str], window: int = 0, multiscale: bool = False) -> list[str]:
    """The name of each feature column, ``<stat>:<channel>``, in :class:`WindowStats`'s order."""
    return [f"{s}:{c}" for s in stat_names(window, multiscale) for c in channels]
