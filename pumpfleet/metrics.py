"""Scoring metrics for RUL regression and failure-within-horizon classification."""

from __future__ import annotations

import numpy as np


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
    order = np.argsort(prob, kind="mergesort")
    ranks = np.empty(len(prob))
    sorted_p = prob[order]
    # Average ranks over ties.
    i = 0
    while i < len(prob):
        j = i
        while j + 1 < len(prob) and sorted_p[j + 1] == sorted_p[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[label].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def regression_report(
    rul_pred: np.ndarray, rul_true: np.ndarray, prob: np.ndarray, label: np.ndarray
) -> dict[str, float | None]:
    """The numbers an evaluation compares: RMSE, MAE, PHM08 score (in hours) and AUC."""
    return {
        "rmse": rmse(rul_pred, rul_true),
        "mae": mae(rul_pred, rul_true),
        "phm08": phm08_score(rul_pred, rul_true),
        "auc": roc_auc(prob, label),
        "n": float(len(rul_true)),
    }
