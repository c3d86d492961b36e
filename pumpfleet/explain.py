"""Why a window was flagged: occlusion attributions of failure risk and RUL.

Each input channel (and each block of time steps of each channel) is replaced by
"missing", which the feature code turns into the mean of the reading's operating regime
(``window_features``: NaN → z = 0), and the window is scored again. A channel's
attribution is the score minus the occluded score: how much that channel, reading what it
read instead of a normal value, moved the failure risk (and the RUL, in hours). It needs
only a function that scores raw windows, so the cloud's onnxruntime session and the
device's engine explain the same way; all variants are scored as one batch, and
:func:`occlusion_many` scores many windows' variants in one call.

Wiring (for the scoring API's ``explain: true``): build the scorer from the served
model, ``score = rul_scorer(run, spec)``, and return
``occlusion(score, raw_window, spec).as_dict()`` beside the prediction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pumpfleet.features import FeatureSpec
from pumpfleet.runtime import Runner
from pumpfleet.scoring import score_rul

Scorer = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # raw [N, W, C+S] → rul, risk


@dataclass(frozen=True)
class Attribution:
    rul_hours: float
    failure_probability: float
    channels: list[str]
    risk_by_channel: np.ndarray  # [C]: risk minus the risk with the channel occluded
    rul_by_channel: np.ndarray  # [C]: RUL minus the RUL with the channel occluded (hours)
    risk_by_time: np.ndarray  # [B, C]: per block of time steps (oldest first) and channel
    block: int  # time steps per block

    def top(self, n: int = 3) -> list[str]:
        """The channels that raised the risk most, largest first."""
        order = np.argsort(-self.risk_by_channel, kind="stable")
        return [self.channels[i] for i in order[:n] if self.risk_by_channel[i] > 0]

    def as_dict(self) -> dict[str, Any]:
        return {
            "rul_hours": self.rul_hours,
            "failure_probability": self.failure_probability,
            "risk_by_channel": dict(zip(self.channels, self.risk_by_channel.tolist(), strict=True)),
            "rul_hours_by_channel": dict(
                zip(self.channels, self.rul_by_channel.tolist(), strict=True)
            ),
            "risk_by_time": {
                c: self.risk_by_time[:, j].tolist() for j, c in enumerate(self.channels)
            },
            "time_block_steps": self.block,
            "top": self.top(),
        }


def rul_scorer(run: Runner, spec: FeatureSpec) -> Scorer:
    """A scorer of raw windows through a model (cloud or device), by the one scoring
    path (:func:`pumpfleet.scoring.score_rul`)."""

    def score(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scored = score_rul(raw, spec, run)
        return scored.rul_hours, scored.failure_probability

    return score


def occlusion(score: Scorer, raw: np.ndarray, spec: FeatureSpec, blocks: int = 4) -> Attribution:
    """Attributions of one raw window ``[W, C + S]`` (settings are never occluded: they
    pick the regime whose mean stands in for a missing reading)."""
    raw = np.asarray(raw, dtype=np.float64)
    return occlusion_many(score, raw[np.newaxis], spec, blocks)[0]


def occlusion_many(
    score: Scorer, raws: np.ndarray, spec: FeatureSpec, blocks: int = 4, per_call: int = 256
) -> list[Attribution]:
    """:func:`occlusion` of each raw window of ``raws [N, W, C + S]``, every window's
    variants stacked into one scoring call (of at most ``per_call`` windows' variants):
    a call per window costs its overhead (features, the runtime's dispatch) N times over.
    The attributions are :func:`occlusion`'s wherever the scorer scores each window the
    same in any batch (the feature code and onnxruntime on CPU do)."""
    raws = np.asarray(raws, dtype=np.float64)
    w, c = spec.window, spec.n_channels
    block = max(1, -(-w // blocks))
    spans = [(a, min(a + block, w)) for a in range(0, w, block)]
    # variant v of a window: the window with mask[v] missing; 0 the window itself, then
    # each channel whole, then each block of time steps of each channel
    mask = np.zeros((1 + c + len(spans) * c, w, raws.shape[-1]), dtype=bool)
    for j in range(c):
        mask[1 + j, :, j] = True
    for k, (a, b) in enumerate(spans):
        for j in range(c):
            mask[1 + c + k * c + j, a:b, j] = True
    v = len(mask)
    out: list[Attribution] = []
    for s in range(0, len(raws), max(1, per_call)):
        part = raws[s : s + max(1, per_call)]
        variants = np.repeat(part[:, np.newaxis], v, axis=1)  # [n, V, W, C + S]
        variants[:, mask] = np.nan
        rul, risk = score(variants.reshape(-1, *raws.shape[1:]))
        rul, risk = np.reshape(rul, (len(part), v)), np.reshape(risk, (len(part), v))
        for i in range(len(part)):
            out.append(
                Attribution(
                    rul_hours=float(rul[i, 0]),
                    failure_probability=float(risk[i, 0]),
                    channels=list(spec.channels),
                    risk_by_channel=risk[i, 0] - risk[i, 1 : 1 + c],
                    rul_by_channel=rul[i, 0] - rul[i, 1 : 1 + c],
                    risk_by_time=risk[i, 0] - risk[i, 1 + c :].reshape(len(spans), c),
                    block=block,
                )
            )
    return out


def summary(a: Attribution, window: int, n: int = 3) -> dict[str, Any]:
    """An alert's drivers in brief, as the device sends them with the alert
    (:class:`pumpfleet.records.Explanation` less its time): the top channels, the
    attributions per channel, and the ``n`` blocks of time steps of a channel that
    raised the risk most (``start``, ``end`` exclusive; 0 the oldest step)."""
    by_time = a.risk_by_time
    order = np.argsort(-by_time, axis=None, kind="stable")[:n]
    blocks = []
    for flat in order:
        b, j = divmod(int(flat), by_time.shape[1])
        if by_time[b, j] <= 0:
            break
        start = b * a.block
        blocks.append(
            {
                "channel": a.channels[j],
                "start": start,
                "end": min(start + a.block, window),
                "risk": float(by_time[b, j]),
            }
        )
    return {
        "top": a.top(n),
        "risk_by_channel": dict(zip(a.channels, a.risk_by_channel.tolist(), strict=True)),
        "rul_hours_by_channel": dict(zip(a.channels, a.rul_by_channel.tolist(), strict=True)),
        "top_blocks": blocks,
        "block_steps": a.block,
    }


def fleet_drivers(attributions: Sequence[Attribution]) -> dict[str, float]:
    """Which channels drive a class's alerts across the fleet: the mean risk attribution
    of each channel over the flagged windows, largest first."""
    if not attributions:
        return {}
    channels = attributions[0].channels
    mean = np.mean([a.risk_by_channel for a in attributions], axis=0)
    order = np.argsort(-mean, kind="stable")
    return {channels[i]: float(mean[i]) for i in order}


@dataclass(frozen=True)
class FlaggedDrivers:
    """What drives a model's flags over a set of windows: ``flagged`` windows reached
    the alert threshold, the ``explained`` most at risk of them were occluded."""

    flagged: int
    windows: int
    explained: int
    risk_by_channel: dict[str, float]  # mean risk attribution, largest first
    rul_hours_by_channel: dict[str, float]  # mean RUL attribution (hours), same order
    top_counts: dict[str, int]  # explained windows whose largest risk attribution is it

    def top(self, n: int = 3) -> list[str]:
        """The channels that raised the risk most on average, largest first."""
        return [c for c, v in list(self.risk_by_channel.items())[:n] if v > 0]

    def as_dict(self) -> dict[str, Any]:
        return {
            "flagged": self.flagged,
            "windows": self.windows,
            "explained": self.explained,
            "risk_by_channel": self.risk_by_channel,
            "rul_hours_by_channel": self.rul_hours_by_channel,
            "top_counts": self.top_counts,
            "top": self.top(),
        }


def flagged_drivers(
    score: Scorer,
    raw: np.ndarray,
    risk: np.ndarray,
    spec: FeatureSpec,
    threshold: float,
    limit: int = 200,
) -> FlaggedDrivers:
    """Occlusion attributions of the windows ``raw [N, W, C + S]`` whose failure risk
    ``risk [N]`` reaches ``threshold``, the ``limit`` most at risk of them, summarised
    per channel with :func:`fleet_drivers` (no windows flagged: empty summaries)."""
    risk = np.asarray(risk, dtype=np.float64).reshape(-1)
    flagged = np.flatnonzero(risk >= threshold)
    chosen = flagged[np.argsort(-risk[flagged], kind="stable")][:limit]
    attributions = occlusion_many(score, np.asarray(raw)[chosen], spec)
    drivers = fleet_drivers(attributions)
    rul = np.mean([a.rul_by_channel for a in attributions], axis=0) if attributions else []
    rul_by = dict(zip(spec.channels, np.asarray(rul, float).tolist(), strict=False))
    tops = [a.channels[int(np.argmax(a.risk_by_channel))] for a in attributions]
    return FlaggedDrivers(
        flagged=len(flagged),
        windows=len(risk),
        explained=len(attributions),
        risk_by_channel=drivers,
        rul_hours_by_channel={c: rul_by[c] for c in drivers},
        top_counts={c: tops.count(c) for c in drivers if c in tops},
    )
