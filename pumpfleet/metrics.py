"""Scoring metrics for RUL regression and failure-within-horizon classification, and the
slices (site, operating regime, RUL bucket) an evaluation breaks them down by.

numpy and pydantic only: pure functions over arrays.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import pairwise

import numpy as np
from pydantic import BaseModel

from pumpfleet.features import FeatureSpec


def rmse(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(pred) - np.asarray(true)) ** 2)))


def mae(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(pred) - np.asarray(true))))


def phm08_score(pred: np.ndarray, true: np.ndarray) -> float:
    """PHM08 asymmetric score: late predictions (d > 0) cost more than early ones."""
    d = np.asarray(pred, dtype=np.float64) - np.asarray(true, dtype=np.float64)
    return float(np.sum(np.where(d < 0, np.exp(-d / 13.0) - 1.0, np.exp(d / 10.0) - 1.0)))


def roc_auc(prob: np.ndarray, label: np.ndarray) -> float | None:
    """Area under the ROC curve (rank statistic, ties averaged); None with one class."""
    prob = np.asarray(prob, dtype=np.float64)
    label = np.asarray(label).astype(bool)
    n_pos, n_neg = int(label.sum()), int((~label).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    _, inverse, counts = np.unique(prob, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)  # 1-based rank of the last member of each tie group
    ranks = ((ends - counts + 1 + ends) / 2.0)[inverse]  # the group's average rank
    return float((ranks[label].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def precision_recall(
    prob: np.ndarray, label: np.ndarray, threshold: float
) -> tuple[float | None, float | None]:
    """Precision and recall of alerting at ``prob >= threshold``; None where undefined
    (no alert raised, or no failure to find)."""
    alert = np.asarray(prob, dtype=np.float64) >= threshold
    label = np.asarray(label).astype(bool)
    tp = int((alert & label).sum())
    n_alert, n_pos = int(alert.sum()), int(label.sum())
    return (tp / n_alert if n_alert else None, tp / n_pos if n_pos else None)


def brier(prob: np.ndarray, label: np.ndarray) -> float:
    """Mean squared error of the failure probability (0 is perfect)."""
    return float(np.mean((np.asarray(prob, dtype=np.float64) - np.asarray(label)) ** 2))


def expected_calibration_error(prob: np.ndarray, label: np.ndarray, bins: int = 10) -> float:
    """ECE: over ``bins`` equal-width probability bins, the share-weighted gap between the
    mean predicted probability and the observed failure rate."""
    prob = np.asarray(prob, dtype=np.float64)
    label = np.asarray(label, dtype=np.float64)
    if len(prob) == 0:
        return 0.0
    which = np.minimum((prob * bins).astype(np.int64), bins - 1)  # p = 1 joins the last bin
    gap = np.abs(
        np.bincount(which, weights=prob, minlength=bins)
        - np.bincount(which, weights=label, minlength=bins)
    )
    return float(gap.sum() / len(prob))  # sum_b n_b/N * |mean_p - mean_y| = sum_b |Σp - Σy| / N


def regression_report(
    rul_pred: np.ndarray, rul_true: np.ndarray, prob: np.ndarray, label: np.ndarray
) -> dict[str, float | None]:
    """The numbers training reports per epoch: RMSE, MAE, PHM08 score (in hours), AUC."""
    return {
        "rmse": rmse(rul_pred, rul_true),
        "mae": mae(rul_pred, rul_true),
        "phm08": phm08_score(rul_pred, rul_true),
        "auc": roc_auc(prob, label),
        "n": float(len(rul_true)),
    }


class Metrics(BaseModel):
    """One model's numbers on one set of windows (a holdout, or one slice of it)."""

    n: int
    rmse: float
    mae: float
    phm08: float
    auc: float | None
    precision: float | None
    recall: float | None
    brier: float
    ece: float


# The metrics where lower is better: the ones a promotion gate may compare.
LOWER_IS_BETTER = ("rmse", "mae", "phm08", "brier", "ece")


def score(
    rul_pred: np.ndarray,
    rul_true: np.ndarray,
    prob: np.ndarray,
    label: np.ndarray,
    threshold: float = 0.5,
) -> Metrics:
    """Every metric an evaluation compares, with alerts at ``prob >= threshold``."""
    if len(rul_true) == 0:
        raise ValueError("no windows to score")
    precision, recall = precision_recall(prob, label, threshold)
    return Metrics(
        n=len(rul_true),
        rmse=rmse(rul_pred, rul_true),
        mae=mae(rul_pred, rul_true),
        phm08=phm08_score(rul_pred, rul_true),
        auc=roc_auc(prob, label),
        precision=precision,
        recall=recall,
        brier=brier(prob, label),
        ece=expected_calibration_error(prob, label),
    )


# --- slices -----------------------------------------------------------------------------


def rul_bucket_edges(horizon_hours: float, cap_hours: float) -> list[float]:
    """Bucket edges: the two halves of the failure horizon (where alerts matter most),
    the rest below the cap; windows at the cap (censored: 'not soon') are their own."""
    edges = [0.0, horizon_hours / 2.0, horizon_hours, cap_hours]
    return sorted({e for e in edges if e <= cap_hours})


def _hours(h: float) -> str:
    return f"{h:g}"


def rul_buckets(rul_hours: np.ndarray, horizon_hours: float, cap_hours: float) -> np.ndarray:
    """Each window's true-RUL bucket label, e.g. ``0-24h``, ``24-48h``, ``48-168h``,
    ``cap 168h``."""
    rul = np.asarray(rul_hours, dtype=np.float64)
    edges = rul_bucket_edges(horizon_hours, cap_hours)
    names = [f"{_hours(a)}-{_hours(b)}h" for a, b in pairwise(edges)]
    # Buckets are (a, b]: a window at exactly the horizon counts as failing within it,
    # as its label does (rul <= horizon).
    idx = np.clip(np.searchsorted(edges, rul, side="left") - 1, 0, len(names) - 1)
    out = np.asarray(names, dtype=object)[idx]
    # The label is capped at exactly the cap; a tolerance absorbs float32 round trips.
    at_cap = rul >= cap_hours * (1.0 - 1e-6)
    out[at_cap] = f"cap {_hours(cap_hours)}h"
    return out


def regime_labels(raw: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    """Each window's operating regime at its last step (the one a prediction is made in),
    ``r0``, ``r1``, ... (``unknown`` where a setting is missing); ``all`` for a class
    with one regime. ``raw`` holds the spec's inputs: channels, then settings."""
    n = len(raw)
    if spec.regimes is None:
        return np.full(n, "all", dtype=object)
    regime = spec.regimes.assign(np.asarray(raw)[:, -1, spec.n_channels :])
    names = np.asarray([f"r{i}" for i in range(spec.regimes.k)] + ["unknown"], dtype=object)
    return names[regime]  # -1 (missing setting) picks the last name: unknown


def slice_labels(
    raw: np.ndarray, cols: Mapping[str, np.ndarray], spec: FeatureSpec
) -> dict[str, np.ndarray]:
    """Per slicing dimension (site, regime, rul), each window's slice, from raw windows of
    ``spec``'s inputs and their columns as :meth:`Snapshot.load` returns them."""
    return {
        "site": np.asarray(cols["site"]).astype(str).astype(object),
        "regime": regime_labels(raw, spec),
        "rul": rul_buckets(cols["rul_hours"], spec.horizon_hours, spec.rul_cap_hours),
    }


def slice_metrics(
    rul_pred: np.ndarray,
    rul_true: np.ndarray,
    prob: np.ndarray,
    label: np.ndarray,
    slices: Mapping[str, np.ndarray],
    threshold: float = 0.5,
) -> dict[str, dict[str, Metrics]]:
    """:func:`score` per dimension and slice value: ``{"site": {"s1": Metrics}, ...}``."""
    out: dict[str, dict[str, Metrics]] = {}
    for dim, keys in slices.items():
        keys = np.asarray(keys)
        if len(keys) != len(rul_true):
            raise ValueError(f"slice {dim!r} has {len(keys)} labels for {len(rul_true)} windows")
        out[dim] = {}
        for value in sorted(set(keys.tolist())):
            m = keys == value
            out[dim][str(value)] = score(rul_pred[m], rul_true[m], prob[m], label[m], threshold)
    return out
