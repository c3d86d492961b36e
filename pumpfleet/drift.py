"""NannyML behind one module: drift of served inputs against a reference, and the
model's performance estimated without labels and realised once labels arrive.

Nothing else in the project imports nannyml. The monitor (``analyse_class``) tests each
continuous window summary with Wasserstein distance and Hellinger distance, categorical
features with chi-squared, and the continuous ones together with PCA reconstruction
error; the methods and their thresholds were chosen on simulated fleets (see
``MULTIPLIERS``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pumpfleet.errors import DataError

log = logging.getLogger(__name__)


def drift_verdict(alerts: Mapping[str, int], min_alert_chunks: int) -> list[str]:
    """Features that alerted in at least ``min_alert_chunks`` chunks (pure)."""
    return sorted(f for f, n in alerts.items() if n >= min_alert_chunks)


# --- The monitor's analysis: every signal of one class, chunk by chunk -------------------

KS, WASSERSTEIN, HELLINGER, CHI2, PCA = (
    "kolmogorov_smirnov",
    "wasserstein",
    "hellinger",
    "chi2",
    "pca",
)
CONTINUOUS = (WASSERSTEIN, HELLINGER)  # each continuous feature, both: see MULTIPLIERS
CATEGORICAL = CHI2
HEALTH_METHOD = KS  # the health score's drift
# A drift statistic alerts above the mean of the reference chunks' plus this many of their
# standard deviations (NannyML's default is 3 for all). Chosen on 20 + 20 simulated fleets
# (``python -m benchmarks.monitor``, 2 drifted chunks in a row raise an alert) and checked
# on 20 + 20 others: each of Wasserstein and Hellinger (binned) saw shifts the other was
# slow to see, and neither alone found every drift within 2 chunks; Kolmogorov-Smirnov at
# 4.5 (before) was 4 chunks late at worst, and at 4 it retrained a no-drift fleet.
# Chi-squared keeps NannyML's own alert.
MULTIPLIERS: dict[str, float] = {WASSERSTEIN: 5.5, HELLINGER: 4.5, PCA: 5.5, KS: 4.5}
# Columns the monitor's frames carry besides the features (see ``analyse_class``).
Y_PROB, Y_PRED, Y_TRUE, RUL_PRED, RUL_TRUE = "y_prob", "y_pred", "y_true", "rul_pred", "rul_true"
HEALTH, ANOMALY = "health_score", "anomaly"  # the anomaly champion's score and flag
SIGNAL_COLUMNS = ["chunk", "start", "end", "kind", "signal", "value", "lower", "upper", "alert"]
DRIFT_KINDS = ("univariate", "multivariate")
MIN_LABELLED = 10  # realised performance of a chunk needs this many labelled predictions
MIN_SCORED = 10  # health signals of a chunk need this many windows the anomaly model scored
# Thresholds come from the spread of each statistic over the reference's chunks: with
# fewer chunks than this, that spread (and so every alert) is uncertain.
MIN_REFERENCE_CHUNKS = 20


@dataclass(frozen=True)
class AnalysisConfig:
    """Chunking, methods and thresholds. A continuous feature's chunk is drifted when
    any of ``continuous_methods`` alerts; each method's threshold is the reference
    chunks' mean plus ``multiplier(method)`` standard deviations (``MULTIPLIERS``, unless
    ``multipliers`` overrides some or ``std_multiplier`` sets one for all)."""

    chunk_size: int = 50
    multivariate: bool = True
    performance: bool = True
    continuous_methods: tuple[str, ...] = CONTINUOUS
    std_multiplier: float | None = None  # one multiplier for every method
    multipliers: Mapping[str, float] | None = None  # per method, over MULTIPLIERS
    # A chunk's anomaly alarms alert when the expected rate would reach them with at most
    # this probability (``pumpfleet.alerts.alarm_bound``).
    alarm_alpha: float = 0.001
    # Also the daily fleet signals (pumpfleet.monitoring.daily): per-pump residuals in
    # daily chunks, for a log that arrives in time order from a large fleet.
    fleet_daily: bool = False

    def multiplier(self, method: str) -> float:
        if self.std_multiplier is not None:
            return self.std_multiplier
        return {**MULTIPLIERS, **(self.multipliers or {})}[method]

    def thresholds(self) -> dict[str, float]:
        """Each drift method used, with its multiplier (what the report states)."""
        methods = [*self.continuous_methods, *([PCA] if self.multivariate else [])]
        return {m: self.multiplier(m) for m in methods}


@dataclass(frozen=True)
class HealthReference:
    """What the anomaly (health) champion of a class is compared with: its health scores
    on reference windows (``health_score`` and ``timestamp``), the false-alarm rate it was
    calibrated to, and the rate of alarms it raised on those reference windows (which
    include pumps about to fail, so it may exceed the calibrated rate)."""

    version: str
    scores: pd.DataFrame
    target_far: float
    reference_alarm_rate: float

    @property
    def expected_alarm_rate(self) -> float:
        """The alarm rate that is no news: the calibrated false-alarm rate, or the rate
        on the reference windows where their real faults raise it above that."""
        return max(self.target_far, self.reference_alarm_rate)


@dataclass
class ClassAnalysis:
    """One class's signals: ``chunks`` is tidy, one row per (chunk, signal)."""

    pump_class: str
    reference_rows: int
    analysis_rows: int
    chunks: pd.DataFrame
    notes: list[str] = field(default_factory=list)

    def drifted(self) -> list[bool]:
        """Per chunk in time order: did any feature or the multivariate signal alert?"""
        d = self.chunks[self.chunks["kind"].isin(DRIFT_KINDS)]
        if d.empty:
            return []
        return [bool(x) for x in d.groupby("chunk")["alert"].any().sort_index()]

    def health_flags(self) -> list[bool]:
        """Per chunk in time order: did the health score drift or the alarm rate exceed
        its bound? Empty where the class's health was not monitored."""
        h = self.chunks[self.chunks["kind"] == "health"]
        if h.empty:
            return []
        return [bool(x) for x in h.groupby("chunk")["alert"].any().sort_index()]

    def alerting_features(self, min_chunks: int = 1) -> list[str]:
        u = self.chunks[self.chunks["kind"] == "univariate"]
        counts = u.groupby("signal")["alert"].sum().astype(int)
        return drift_verdict({str(k): int(v) for k, v in counts.items()}, min_chunks)


def feature_types(frame: pd.DataFrame, features: list[str]) -> tuple[list[str], list[str]]:
    """(continuous, categorical): numbers with many values are continuous; strings,
    booleans and numbers with a handful of values (a setpoint, a mode) are categorical."""
    cont: list[str] = []
    cat: list[str] = []
    for f in features:
        s = frame[f]
        numeric = pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)
        (cont if numeric and s.nunique(dropna=True) > 10 else cat).append(f)
    return cont, cat


def shuffled_reference(frame: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Rows shuffled (seeded) under a sorted time axis, so that each reference chunk is a
    random sample of the reference: NannyML sets its thresholds from the spread of each
    statistic over reference chunks, and time-ordered chunks (each one regime's slice of
    history) set them wide enough to miss a 15 % sensor shift."""
    order = np.random.default_rng(seed).permutation(len(frame))
    out = frame.iloc[order].reset_index(drop=True)
    out["timestamp"] = np.sort(pd.to_datetime(frame["timestamp"], utc=True).to_numpy())
    return out


def _tidy(table: pd.DataFrame, kind: str, signal: str, key: tuple[str, ...]) -> pd.DataFrame:
    chunk = table["chunk"]
    if isinstance(chunk.columns, pd.MultiIndex):  # univariate results nest one level deeper
        chunk = chunk["chunk"]
    metric = table.sort_index(axis=1)[key]
    return pd.DataFrame(
        {
            "chunk": chunk["chunk_index"].to_numpy(int),
            "start": chunk["start_date"].to_numpy(),
            "end": chunk["end_date"].to_numpy(),
            "kind": kind,
            "signal": signal,
            "value": metric["value"].to_numpy(float),
            "lower": pd.to_numeric(metric["lower_threshold"], errors="coerce").to_numpy(float),
            "upper": pd.to_numeric(metric["upper_threshold"], errors="coerce").to_numpy(float),
            "alert": metric["alert"].fillna(False).astype(bool).to_numpy(),
        }
    )


def analyse_class(
    pump_class: str,
    reference: pd.DataFrame,
    analysis: pd.DataFrame,
    features: list[str],
    cfg: AnalysisConfig,
    perf_reference: pd.DataFrame | None = None,
    health: HealthReference | None = None,
) -> ClassAnalysis:
    """Univariate and multivariate drift of ``features``, estimated performance (CBPE for
    the failure classifier, DLE for the RUL regressor) and realised performance where the
    analysis has labels, chunk by chunk.

    ``reference`` and ``analysis`` hold the features and ``timestamp``; performance needs
    ``perf_reference`` with ``y_prob``, ``y_pred``, ``y_true``, ``rul_pred``, ``rul_true``
    (the champion's predictions on the data it was validated on, with their labels) and
    the same prediction columns in ``analysis`` (``y_true``/``rul_true`` where known).
    With ``health``, the analysis's ``health_score`` and ``anomaly`` columns (NaN where
    the anomaly champion did not score a row) give the class's health signals."""
    import nannyml as nml

    n = cfg.chunk_size
    features = [f for f in features if f in analysis and reference[f].notna().any()]
    if not features:
        raise DataError(f"{pump_class}: no feature in common with the reference")
    if len(reference) < 2 * n:
        raise DataError(
            f"{pump_class}: reference has {len(reference)} rows, need at least {2 * n} (two chunks)"
        )
    if len(analysis) < n:
        raise DataError(f"{pump_class}: {len(analysis)} rows to analyse, fewer than a chunk ({n})")
    cont, cat = feature_types(reference, features)
    ts = ["timestamp"]
    parts = []
    methods = list(cfg.continuous_methods)
    uni = nml.UnivariateDriftCalculator(
        column_names=features,
        treat_as_categorical=cat or None,
        timestamp_column_name="timestamp",
        continuous_methods=methods,
        categorical_methods=[CATEGORICAL],  # NannyML keeps its own alert rule for chi2
        chunk_size=n,
        thresholds={m: _upper(cfg.multiplier(m)) for m in methods},
    )
    table = uni.fit(reference[features + ts]).calculate(analysis[features + ts]).to_df()
    table = table[table[("chunk", "chunk", "period")] == "analysis"].reset_index(drop=True)
    for f in features:
        ms = methods if f in cont else [CATEGORICAL]
        parts.append(_any_method([_tidy(table, "univariate", f, (f, m)) for m in ms]))
    bounds = table["chunk"]["chunk"][["chunk_index", "start_index", "end_index"]]
    notes: list[str] = []
    if cfg.multivariate and len(cont) >= 2:
        mv = nml.DataReconstructionDriftCalculator(
            column_names=cont,
            timestamp_column_name="timestamp",
            chunk_size=n,
            threshold=_upper(cfg.multiplier(PCA)),
        )
        t = mv.fit(reference[cont + ts]).calculate(analysis[cont + ts]).filter(period="analysis")
        parts.append(
            _tidy(t.to_df(), "multivariate", "pca_reconstruction", ("reconstruction_error",))
        )
    if health is not None:
        parts.append(_health(pump_class, analysis, health, cfg, bounds, parts[0], notes))
    if cfg.performance:
        parts += _performance(pump_class, perf_reference, analysis, cont, n, notes)
        parts.append(_realised(analysis, bounds, parts[0]))
    if len(reference) < MIN_REFERENCE_CHUNKS * n:
        notes.append(
            f"{pump_class}: the reference holds {len(reference) // n} chunks of {n}; drift "
            f"thresholds set on fewer than {MIN_REFERENCE_CHUNKS} are uncertain"
        )
    chunks = pd.concat([p for p in parts if not p.empty], ignore_index=True)
    return ClassAnalysis(pump_class, len(reference), len(analysis), chunks, notes)


def _upper(multiplier: float) -> object:
    from nannyml.thresholds import StandardDeviationThreshold

    return StandardDeviationThreshold(std_lower_multiplier=None, std_upper_multiplier=multiplier)


def _any_method(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """One feature's signal from several methods: per chunk, the method furthest over (or
    closest to) its threshold, alerting when any method does."""
    if len(frames) == 1:
        return frames[0]
    both = pd.concat(frames, ignore_index=True)
    ratio = (both["value"] / both["upper"]).fillna(-np.inf)
    first = both.loc[ratio.groupby(both["chunk"]).idxmax()].set_index("chunk")
    first["alert"] = both.groupby("chunk")["alert"].any()
    return first.reset_index()[SIGNAL_COLUMNS]


def _performance(
    cls: str,
    ref: pd.DataFrame | None,
    analysis: pd.DataFrame,
    features: list[str],
    n: int,
    notes: list[str],
) -> list[pd.DataFrame]:
    import nannyml as nml

    need = [Y_PROB, Y_PRED, Y_TRUE, RUL_PRED, RUL_TRUE]
    if ref is None or len(ref) < 2 * n or not set(need) <= set(ref):
        notes.append(f"{cls}: no reference predictions with labels; performance not estimated")
        return []
    if not {Y_PROB, RUL_PRED} <= set(analysis) or analysis[Y_PROB].isna().all():
        notes.append(f"{cls}: the log has no model outputs; performance not estimated")
        return []
    ana = analysis.dropna(subset=[Y_PROB, RUL_PRED]).reset_index(drop=True)
    if len(ana) < n:
        notes.append(f"{cls}: fewer than a chunk of the champion's predictions; not estimated")
        return []
    out = []
    ts = ["timestamp"]
    if ref[Y_TRUE].nunique() == 2:
        cbpe = nml.CBPE(
            metrics=["roc_auc"],
            y_pred_proba=Y_PROB,
            y_pred=Y_PRED,
            y_true=Y_TRUE,
            problem_type="classification_binary",
            timestamp_column_name="timestamp",
            chunk_size=n,
        )
        cols = [Y_PROB, Y_PRED]
        t = cbpe.fit(ref[[*cols, Y_TRUE, *ts]]).estimate(ana[cols + ts]).filter(period="analysis")
        out.append(_tidy(t.to_df(), "estimated", "roc_auc", ("roc_auc",)))
    else:
        notes.append(f"{cls}: the reference has one failure label only; CBPE skipped")
    dle = nml.DLE(
        feature_column_names=features,
        y_pred=RUL_PRED,
        y_true=RUL_TRUE,
        timestamp_column_name="timestamp",
        chunk_size=n,
        metrics=["mae"],
        hyperparameters={"verbosity": -1, "n_jobs": 1},
    )
    cols = [*features, RUL_PRED]
    t = dle.fit(ref[[*cols, RUL_TRUE, *ts]]).estimate(ana[cols + ts]).filter(period="analysis")
    out.append(_tidy(t.to_df(), "estimated", "mae", ("mae",)))
    return out


def _realised(analysis: pd.DataFrame, bounds: pd.DataFrame, like: pd.DataFrame) -> pd.DataFrame:
    """MAE of RUL and ROC AUC of failure risk per chunk, over the labelled predictions."""
    from pumpfleet.metrics import roc_auc

    if RUL_TRUE not in analysis or analysis[RUL_TRUE].isna().all():
        return pd.DataFrame(columns=SIGNAL_COLUMNS)
    rows = []
    for (i, a, b), start, end in zip(
        bounds.itertuples(index=False), like["start"], like["end"], strict=True
    ):
        part = analysis.iloc[int(a) : int(b) + 1]
        part = part[part[RUL_TRUE].notna() & part[RUL_PRED].notna()]
        if len(part) < MIN_LABELLED:
            continue
        mae = float(np.mean(np.abs(part[RUL_PRED] - part[RUL_TRUE])))
        auc = roc_auc(part[Y_PROB].to_numpy(float), part[Y_TRUE].to_numpy(int))
        for name, v in (("mae", mae), ("roc_auc", auc)):
            if v is not None:
                rows.append([int(i), start, end, "realised", name, v, np.nan, np.nan, False])
    return pd.DataFrame(rows, columns=SIGNAL_COLUMNS)


def _health(
    cls: str,
    analysis: pd.DataFrame,
    ref: HealthReference,
    cfg: AnalysisConfig,
    bounds: pd.DataFrame,
    like: pd.DataFrame,
    notes: list[str],
) -> pd.DataFrame:
    """Per chunk, on the rows the anomaly champion scored: drift of the health score
    (Kolmogorov-Smirnov against the reference scores) and the alarm rate against the
    binomial bound of the expected rate. Chunks with fewer than ``MIN_SCORED`` scored
    rows get no value and never alert."""
    import nannyml as nml

    from pumpfleet.alerts import alarm_bound

    if HEALTH not in analysis or analysis[HEALTH].notna().sum() < MIN_SCORED:
        notes.append(f"{cls}: the log has no health scores from anomaly model v{ref.version}")
        return pd.DataFrame(columns=SIGNAL_COLUMNS)
    ts = ["timestamp"]
    calc = nml.UnivariateDriftCalculator(
        column_names=[HEALTH],
        timestamp_column_name="timestamp",
        continuous_methods=[HEALTH_METHOD],
        chunk_size=cfg.chunk_size,
        thresholds={HEALTH_METHOD: _upper(cfg.multiplier(HEALTH_METHOD))},
    )
    table = calc.fit(ref.scores[[HEALTH, *ts]]).calculate(analysis[[HEALTH, *ts]]).to_df()
    table = table[table[("chunk", "chunk", "period")] == "analysis"].reset_index(drop=True)
    drift = _tidy(table, "health", HEALTH, (HEALTH, HEALTH_METHOD))
    p0 = ref.expected_alarm_rate
    scored = analysis[HEALTH].notna()
    # the flag where the log has one; else what it means (a score above 1)
    flag = analysis[ANOMALY] if ANOMALY in analysis else (analysis[HEALTH] > 1).astype(float)
    flag = pd.to_numeric(flag, errors="coerce").where(scored)
    alarms = []
    for (i, a, b), start, end in zip(
        bounds.itertuples(index=False), like["start"], like["end"], strict=True
    ):
        flags = flag.iloc[int(a) : int(b) + 1].dropna()
        n = len(flags)
        row = [int(i), start, end, "health", "alarm_rate", np.nan, np.nan, np.nan, False]
        if n < MIN_SCORED:
            drift.loc[drift["chunk"] == int(i), ["value", "alert"]] = [np.nan, False]
        else:
            k, bound = int(flags.sum()), alarm_bound(n, p0, cfg.alarm_alpha)
            row[5:] = [k / n, np.nan, bound / n, k >= bound]
        alarms.append(row)
    out = pd.concat([drift, pd.DataFrame(alarms, columns=SIGNAL_COLUMNS)], ignore_index=True)
    out["alert"] = out["alert"].astype(bool)
    return out
