"""NannyML behind one class: univariate drift of served inputs against a reference.

Nothing else in the project imports nannyml. Kolmogorov-Smirnov is used for the
continuous window summaries: in a quick test Jensen-Shannon raised false alerts on an
unshifted feature where KS did not (see STACK.md).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import pandas as pd

from pumpfleet.errors import DataError

log = logging.getLogger(__name__)

METHOD = "kolmogorov_smirnov"


@dataclass
class FeatureDrift:
    chunks: int
    alerts: int
    max_statistic: float
    threshold: float | None


@dataclass
class DriftResult:
    pump_class: str
    reference_rows: int
    analysis_rows: int
    features: dict[str, FeatureDrift]
    drifted_features: list[str] = field(default_factory=list)
    figure_html: str = ""

    @property
    def drifted(self) -> bool:
        return bool(self.drifted_features)


def drift_verdict(alerts: Mapping[str, int], min_alert_chunks: int) -> list[str]:
    """Features that alerted in at least ``min_alert_chunks`` chunks (pure)."""
    return sorted(f for f, n in alerts.items() if n >= min_alert_chunks)


class DriftMonitor:
    """Univariate drift per feature, chunked by size, NannyML's thresholds."""

    def __init__(self, features: list[str], chunk_size: int = 100, min_alert_chunks: int = 1):
        if not features:
            raise DataError("drift needs at least one feature")
        self.features = features
        self.chunk_size = chunk_size
        self.min_alert_chunks = min_alert_chunks

    def run(
        self, pump_class: str, reference: pd.DataFrame, analysis: pd.DataFrame, with_plot: bool
    ) -> DriftResult:
        import nannyml as nml

        features = [f for f in self.features if reference[f].notna().any()]
        if len(reference) < 2 * self.chunk_size:
            raise DataError(
                f"{pump_class}: reference has {len(reference)} rows, "
                f"need at least {2 * self.chunk_size} (two chunks)"
            )
        if analysis.empty:
            raise DataError(f"{pump_class}: nothing to analyse")
        calc = nml.UnivariateDriftCalculator(
            column_names=features,
            timestamp_column_name="timestamp",
            continuous_methods=[METHOD],
            chunk_size=self.chunk_size,
        )
        calc.fit(reference[[*features, "timestamp"]])
        result = calc.calculate(analysis[[*features, "timestamp"]])
        table = result.filter(period="analysis").to_df().sort_index(axis=1)
        out: dict[str, FeatureDrift] = {}
        for f in features:
            cols = table[(f, METHOD)]
            out[f] = FeatureDrift(
                chunks=len(cols),
                alerts=int(cols["alert"].fillna(False).astype(bool).sum()),
                max_statistic=float(cols["value"].max()),
                threshold=None
                if pd.isna(cols["upper_threshold"].iloc[0])
                else float(cols["upper_threshold"].iloc[0]),
            )
        html = ""
        if with_plot:
            fig = result.filter(period="all").plot(kind="drift")
            fig.update_layout(title=f"{pump_class}: univariate drift ({METHOD})")
            html = fig.to_html(full_html=False, include_plotlyjs=False)
        return DriftResult(
            pump_class=pump_class,
            reference_rows=len(reference),
            analysis_rows=len(analysis),
            features=out,
            drifted_features=drift_verdict(
                {f: d.alerts for f, d in out.items()}, self.min_alert_chunks
            ),
            figure_html=html,
        )
