"""Learning a pump class's operating regimes from its operating settings.

A regime is a cluster of setting values (C-MAPSS FD002 and FD004 have six, a simulated
ESP three speeds). The number of regimes is chosen by the silhouette of k-means
clusterings: a class whose settings form no clear clusters (C-MAPSS FD001's settings are
noise around one point) has one regime and keeps whole-class statistics.

Fitting runs once, at ingest; assigning readings to regimes is
:meth:`pumpfleet.features.Regimes.assign`, numpy only, the same in training, serving and
on the edge.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pumpfleet.features import Regimes

MAX_REGIMES = 8
# Below this silhouette the clusters are not clear enough to normalise by.
MIN_SILHOUETTE = 0.7
# Rows used to fit and to score the clusterings (a sample, evenly spaced).
FIT_ROWS = 5_000
SCORE_ROWS = 2_000


@dataclass(frozen=True)
class RegimeFit:
    """Cluster centres in the settings' units, the scale distances are measured in, and
    how clear the clusters were."""

    center: np.ndarray  # [k, S]
    scale: np.ndarray  # [S]
    silhouette: float


def _even(n: int, m: int) -> np.ndarray:
    return np.arange(n) if n <= m else np.linspace(0, n - 1, m).round().astype(np.int64)


def fit_regimes(
    settings: np.ndarray,
    max_k: int = MAX_REGIMES,
    min_silhouette: float = MIN_SILHOUETTE,
    seed: int = 0,
) -> RegimeFit | None:
    """Regimes of settings rows ``[N, S]`` (rows with a missing setting are ignored), or
    None where they form fewer than two clear clusters."""
    from threadpoolctl import threadpool_limits

    # One thread: on a busy 2-core machine OpenMP's thread pool made each small fit
    # 50-100 times slower.
    with threadpool_limits(limits=1):
        return _fit(settings, max_k, min_silhouette, seed)


def _fit(settings: np.ndarray, max_k: int, min_silhouette: float, seed: int) -> RegimeFit | None:
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    x = np.asarray(settings, dtype=np.float64)
    x = x[~np.isnan(x).any(axis=1)]
    if len(x) < 20:
        return None
    scale = x.std(axis=0)
    varying = scale > 1e-9 * np.maximum(np.abs(x).max(axis=0), 1.0)
    if not varying.any():
        return None
    scale = np.where(varying, scale, 1.0)
    z = (x / scale)[_even(len(x), FIT_ROWS)]
    distinct = len(np.unique(z.round(9), axis=0))
    scored = z[_even(len(z), SCORE_ROWS)]
    best: tuple[float, np.ndarray] | None = None
    for k in range(2, min(max_k, distinct) + 1):
        km = KMeans(n_clusters=k, n_init=2, random_state=seed).fit(z)
        labels = km.predict(scored)
        if len(np.unique(labels)) < 2:
            continue
        score = float(silhouette_score(scored, labels))
        # Ties (to 3 decimals) go to the smaller k.
        if best is None or score > best[0] + 1e-3:
            best = (score, km.cluster_centers_)
    if best is None or best[0] < min_silhouette:
        return None
    score, centers = best
    center = centers * scale
    center = center[np.lexsort(center.T[::-1])]  # a stable order: by setting, then the next
    return RegimeFit(center=center, scale=scale, silhouette=score)


def regime_statistics(
    values: np.ndarray, regime: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per regime (0..k-1) and channel: count, mean and sum of squared deviations of the
    values ``[N, C]`` (NaN ignored), for an exact merge across parts (Chan et al.)."""
    n_ch = values.shape[1]
    n = np.zeros((k, n_ch))
    mean = np.zeros((k, n_ch))
    m2 = np.zeros((k, n_ch))
    for r in range(k):
        v = values[regime == r]
        seen = ~np.isnan(v)
        n[r] = seen.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean[r] = np.where(n[r] > 0, np.where(seen, v, 0.0).sum(axis=0) / n[r], 0.0)
        m2[r] = np.where(seen, (v - mean[r]) ** 2, 0.0).sum(axis=0)
    return n, mean, m2


def merge_statistics(
    parts: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Count, mean and sample standard deviation (ddof 1; NaN below two values) merged
    from parts' (count, mean, m2) arrays of one shape."""
    n = np.sum([p[0] for p in parts], axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.sum([p[0] * p[1] for p in parts], axis=0) / n
        m2 = np.sum([p[2] + p[0] * (p[1] - mean) ** 2 for p in parts], axis=0)
        std = np.where(n > 1, np.sqrt(m2 / (n - 1)), np.nan)
    return n, mean, std


SAMPLE_ROWS = 256


def sample_rows(n: int, m: int = SAMPLE_ROWS) -> np.ndarray:
    """Up to ``m`` evenly spaced row positions of ``n`` (a pump's settings sample: the
    same rows whichever process takes it)."""
    return _even(n, m)


def class_regimes(
    fit: RegimeFit | None,
    settings: Sequence[str],
    per_regime: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
    mean: Sequence[float],
    std: Sequence[float],
) -> Regimes | None:
    """The spec's ``regimes`` entry from a fit and its merged per-regime (count, mean,
    std) ``[k, C]``: a regime with fewer than two values of a channel, or none that vary,
    takes the all-readings statistics for it."""
    if fit is None or per_regime is None:
        return None
    n, r_mean, r_std = per_regime
    ok = (n > 1) & np.isfinite(r_std) & (r_std > 0)
    r_mean = np.where(ok, r_mean, np.asarray(mean))
    r_std = np.where(ok, r_std, np.asarray(std))
    return Regimes(
        settings=list(settings),
        center=fit.center.tolist(),
        scale=fit.scale.tolist(),
        mean=r_mean.tolist(),
        std=r_std.tolist(),
        rows=n.max(axis=1).astype(int).tolist(),
    )
