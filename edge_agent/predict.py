"""From cut windows to the records the store keeps: scored by the active model through the
one scoring path (its health too, where the bundle has a health model), the windows it
failed on scored by the model it replaced, each record held to the prediction record
contract (:class:`pumpfleet.records.PredictionRecord`)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import ValidationError

from edge_agent import windows
from edge_agent.health import health_or_none
from edge_agent.model import Scorer
from pumpfleet.errors import one_line
from pumpfleet.features import window_summary
from pumpfleet.records import PredictionRecord
from pumpfleet.scoring import RulScores

log = logging.getLogger(__name__)


@dataclass
class Batch:
    """What scoring a batch of windows gave: the records to store (``{"key", "alert",
    "anomaly", "row"}``), the raw windows by record key (what explanations read), and
    how many windows the active model failed on: its RUL outputs (not recorded unless
    the fallback scored them), its health (recorded without one), either (what its
    probation counts), and records the contract refused."""

    records: list[dict[str, Any]] = field(default_factory=list)
    raw: dict[str, np.ndarray] = field(default_factory=dict)
    scorers: dict[str, Scorer] = field(default_factory=dict)
    counts: dict[str, int] = field(
        default_factory=lambda: {"rul": 0, "anomaly": 0, "windows": 0, "refused": 0}
    )


def raw_windows(cut_windows: list[list[windows.Row]]) -> np.ndarray:
    """Windows of rows as ``[N, W, C + S]`` float64, a missing reading as NaN."""
    return np.array(
        [[[np.nan if v is None else v for v in row] for row in w] for w in cut_windows],
        dtype=np.float64,
    )


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _same_inputs(a: Scorer, b: Scorer) -> bool:
    return a.spec.inputs == b.spec.inputs and a.spec.window == b.spec.window


def _predict(scorer: Scorer, raw: np.ndarray, threshold: float) -> tuple[RulScores, float]:
    """``Scorer.predict``, where a model that raises has failed every window: that is
    the error rate its probation counts, and the agent goes on."""
    try:
        return scorer.predict(raw, threshold)
    except Exception as e:  # onnxruntime's errors have no common base but Exception
        log.warning("v%d failed on %d windows: %s", scorer.version, len(raw), e)
        n, none = len(raw), np.zeros(len(raw), dtype=bool)
        return RulScores(np.zeros(n), np.zeros(n), none, none, raw, np.zeros((n, 2))), 0.0


def score_batch(
    device_id: str,
    scorer: Scorer,
    fallback: Scorer | None,
    threshold: float,
    raw: np.ndarray,
    ends: list[int],
    pumps: list[str],
) -> Batch:
    """Score raw windows ``[N, W, C + S]`` (of ``pumps``, ending at ``ends``) into
    records (see :class:`Batch`)."""
    out = Batch()
    if not len(raw):
        return out
    scored, ms = _predict(scorer, raw, threshold)
    rul, prob, alert, ok = scored.rul_hours, scored.failure_probability, scored.alert, scored.ok
    health = health_or_none(scorer.health, raw, scorer.version)
    used = [scorer] * len(raw)
    failed = ~ok | ~health.ok if scorer.health is not None else ~ok
    counts = out.counts
    counts["rul"] = int((~ok).sum())
    counts["anomaly"] = int((~health.ok).sum()) if scorer.health is not None else 0
    counts["windows"] = int(failed.sum())
    if counts["windows"] and fallback is not None and _same_inputs(fallback, scorer):
        # Windows the new model could not score are scored by the one it replaced.
        bad = np.flatnonzero(failed)
        again, _ = _predict(fallback, raw[bad], threshold)
        h2 = health_or_none(fallback.health, raw[bad], fallback.version)
        rul[bad], prob[bad], ok[bad] = again.rul_hours, again.failure_probability, again.ok
        alert[bad] = again.alert
        health.scores[bad], health.flags[bad], health.ok[bad] = h2.scores, h2.flags, h2.ok
        for i in bad:
            used[i] = fallback
    if counts["windows"]:
        log.warning(
            "v%d could not score %d of %d windows (RUL %d, health %d)",
            scorer.version,
            counts["windows"],
            len(raw),
            counts["rul"],
            counts["anomaly"],
        )
    summary = window_summary(raw, scorer.spec)
    flagged: list[str] = []
    for i in np.flatnonzero(ok):
        key = f"{device_id}:{pumps[i]}:{ends[i]}"
        model = used[i].health
        has_health = model is not None and bool(health.ok[i])
        anomaly = bool(health.flags[i]) if has_health else None
        fields = {
            "request_id": key,
            "timestamp": int(ends[i]),
            "pump_id": pumps[i],
            "pump_class": used[i].bundle.pump_class,
            "arm": "edge",
            "model_version": str(used[i].version),
            "variant": used[i].variant,
            "rul_hours": float(rul[i]),
            "failure_probability": float(prob[i]),
            "alert": bool(alert[i]),
            "latency_ms": ms,
            "shadow_version": None,
            "shadow_rul_hours": None,
            "shadow_failure_probability": None,
            "health_score": float(health.scores[i]) if has_health else None,
            "anomaly": anomaly,
            "anomaly_version": model.version if has_health and model is not None else None,
            **{f"in_{c}": _finite(v[i]) for c, v in summary.items()},
        }
        try:  # the record contract the cloud's upload route holds it to
            row = PredictionRecord.model_validate(fields).model_dump()
        except ValidationError as e:
            counts["refused"] += 1
            log.warning("window of %s not recorded: %s", pumps[i], one_line(e))
            continue
        out.records.append(
            {"key": key, "alert": bool(alert[i]), "anomaly": bool(anomaly), "row": row}
        )
        if alert[i]:
            out.raw[key] = raw[i]
            out.scorers[key] = used[i]
        if anomaly:
            flagged.append(pumps[i])
    if flagged:
        # The device's local alarm: these rows are kept through any quota, like alerts.
        log.warning(
            "anomaly: %d windows over the health threshold (pumps %s)",
            len(flagged),
            ", ".join(sorted(set(flagged))[:10]),
        )
    return out
