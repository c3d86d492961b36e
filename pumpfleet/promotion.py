"""Promotion: a pure decision over evaluation reports and a policy."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, Field

Report = Mapping[str, float | None]


class PromotionPolicy(BaseModel):
    """When a challenger replaces the champion.

    A first model (no champion yet) must beat the trivial baseline (predicting the
    training mean RUL) by ``min_gain_over_baseline``; a later one must beat the champion
    on the same holdout by ``min_gain_over_champion`` (relative RMSE).
    """

    metric: str = "rmse"
    min_gain_over_baseline: float = Field(default=0.05, ge=0, lt=1)
    min_gain_over_champion: float = Field(default=0.0, ge=0, lt=1)


class Decision(BaseModel):
    promote: bool
    reason: str


def _metric(report: Report, name: str, who: str) -> float:
    value = report.get(name)
    if value is None:
        raise ValueError(f"{who} report has no {name!r}")
    return float(value)


def decide_promotion(
    challenger: Report,
    champion: Report | None,
    baseline: Report,
    policy: PromotionPolicy,
) -> Decision:
    """Whether ``challenger`` should become champion. Lower metric is better."""
    m = policy.metric
    ch = _metric(challenger, m, "challenger")
    base = _metric(baseline, m, "baseline")
    if champion is None:
        need = base * (1.0 - policy.min_gain_over_baseline)
        if ch <= need:
            return Decision(
                promote=True, reason=f"first model: {m} {ch:.3f} beats baseline {base:.3f}"
            )
        return Decision(
            promote=False, reason=f"first model: {m} {ch:.3f} does not beat baseline {base:.3f}"
        )
    cur = _metric(champion, m, "champion")
    need = cur * (1.0 - policy.min_gain_over_champion)
    if ch < need:
        return Decision(promote=True, reason=f"{m} {ch:.3f} beats champion {cur:.3f}")
    return Decision(promote=False, reason=f"{m} {ch:.3f} does not beat champion {cur:.3f}")
