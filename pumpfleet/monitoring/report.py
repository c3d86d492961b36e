"""The monitor's report: the fleet drift map (pump class by feature by chunk), and per
class its drift and its estimated vs realised performance over time, as PNG figures
(matplotlib) embedded in one self-contained HTML page."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from pumpfleet.drift import ClassAnalysis

MULTIVARIATE = "multivariate (PCA)"
MAP_KINDS = ["univariate", "multivariate", "health"]
HEALTH_LABELS = {"health_score": "health score (anomaly model)", "alarm_rate": "anomaly alarm rate"}


def _label(kind: str, signal: str) -> str:
    if kind == "multivariate":
        return MULTIVARIATE
    return HEALTH_LABELS.get(signal, signal) if kind == "health" else signal


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display on a job's worker
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return buf.getvalue()


def drift_ratios(results: dict[str, ClassAnalysis]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Rows ``class · feature`` (and the health signals, where a class has an anomaly
    model), and per chunk the statistic over its alert threshold (≥ 1: alert) and the
    alert flags; NaN where a class has fewer chunks."""
    labels: list[str] = []
    series: list[tuple[np.ndarray, np.ndarray]] = []
    for cls, r in sorted(results.items()):
        d = r.chunks[r.chunks["kind"].isin(MAP_KINDS)]
        d = d.assign(order=d["kind"].map(MAP_KINDS.index))
        for (_, kind, sig), g in d.groupby(["order", "kind", "signal"], sort=True):
            g = g.sort_values("chunk")
            ratio = (g["value"] / g["upper"]).to_numpy(float)
            labels.append(f"{cls} · {_label(str(kind), str(sig))}")
            series.append((ratio, g["alert"].to_numpy(bool)))
    width = max((len(s[0]) for s in series), default=0)
    ratios = np.full((len(series), width), np.nan)
    alerts = np.zeros((len(series), width), bool)
    for i, (ratio, alert) in enumerate(series):
        ratios[i, : len(ratio)], alerts[i, : len(alert)] = ratio, alert
    return labels, ratios, alerts


def drift_map_png(results: dict[str, ClassAnalysis]) -> bytes:
    """The fleet drift map: one row per class and feature, one column per time chunk,
    coloured by the drift statistic over its threshold; alerts are marked x."""
    plt = _pyplot()
    labels, ratios, alerts = drift_ratios(results)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.3 * ratios.shape[1] + 3), 0.32 * len(labels) + 1.6))
    im = ax.imshow(np.clip(ratios, 0, 2), aspect="auto", cmap="RdYlBu_r", vmin=0, vmax=2)
    ys, xs = np.nonzero(alerts)
    ax.scatter(xs, ys, marker="x", color="black", s=18, linewidths=1.2)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_xlabel("time chunk (oldest left)")
    ax.set_title("fleet drift map: statistic / alert threshold (x = alert)")
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.02, label="≥ 1 alerts")
    return _png(fig)


def class_png(r: ClassAnalysis) -> bytes:
    """One class over time: drift per feature (and multivariate), estimated vs realised
    ROC AUC of the failure risk, estimated vs realised MAE of the RUL."""
    plt = _pyplot()
    c = r.chunks
    health = c[c["kind"] == "health"]
    fig, axes = plt.subplots(1, 4 if len(health) else 3, figsize=(18 if len(health) else 14, 3.2))
    if len(health):
        _health_panel(axes[3], health, r.pump_class)
    ax = axes[0]
    for (kind, sig), g in c[c["kind"].isin(["univariate", "multivariate"])].groupby(
        ["kind", "signal"]
    ):
        g = g.sort_values("chunk")
        label = MULTIVARIATE if kind == "multivariate" else sig
        ax.plot(g["chunk"], g["value"] / g["upper"], marker=".", label=label)
    ax.axhline(1.0, color="red", lw=0.8, ls="--")
    ax.set_title(f"{r.pump_class}: drift (statistic / threshold)")
    ax.set_xlabel("chunk")
    ax.legend(fontsize=7, ncol=2)
    panels = ((axes[1], "roc_auc", "failure risk ROC AUC"), (axes[2], "mae", "RUL MAE h"))
    for ax, sig, title in panels:
        _perf(ax, c, sig)
        ax.set_title(f"{r.pump_class}: {title}")
        ax.set_xlabel("chunk")
    return _png(fig)


def _health_panel(ax: Any, h: pd.DataFrame, cls: str) -> None:
    """The anomaly model's alarm rate per chunk with its alert bound, and the health
    score's drift statistic over its threshold."""
    rate = h[h["signal"] == "alarm_rate"].sort_values("chunk")
    ax.plot(rate["chunk"], 100 * rate["value"], marker=".", label="alarm rate %")
    ax.plot(rate["chunk"], 100 * rate["upper"], color="red", lw=0.8, ls="--", label="alert bound %")
    ks = h[h["signal"] == "health_score"].sort_values("chunk")
    ax2 = ax.twinx()
    ax2.plot(ks["chunk"], ks["value"] / ks["upper"], color="grey", marker="x", lw=0.8)
    ax2.set_ylabel("score drift / threshold", fontsize=7)
    hot = pd.concat([rate[rate["alert"]], ks[ks["alert"]]])["chunk"].unique()
    for x in hot:
        ax.axvspan(x - 0.5, x + 0.5, color="red", alpha=0.1)
    ax.set_title(f"{cls}: health (anomaly model)")
    ax.set_xlabel("chunk")
    ax.legend(fontsize=7)


def _perf(ax: Any, c: pd.DataFrame, sig: str) -> None:
    est = c[(c["kind"] == "estimated") & (c["signal"] == sig)].sort_values("chunk")
    real = c[(c["kind"] == "realised") & (c["signal"] == sig)].sort_values("chunk")
    if not est.empty:
        ax.plot(est["chunk"], est["value"], marker=".", label="estimated")
        for bound in ("lower", "upper"):
            if est[bound].notna().any():
                ax.plot(est["chunk"], est[bound], color="grey", lw=0.8, ls=":")
        hot = est[est["alert"]]
        ax.scatter(hot["chunk"], hot["value"], color="red", zorder=3, label="alert")
    if not real.empty:
        ax.plot(real["chunk"], real["value"], marker="s", label="realised")
    if est.empty and real.empty:
        ax.text(0.5, 0.5, "no estimate", ha="center", va="center", transform=ax.transAxes)
    else:
        ax.legend(fontsize=7)


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode()
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{data}'>"


def report_html(
    summary: dict[str, Any],
    results: dict[str, ClassAnalysis],
    map_png: bytes | None,
    figures: Mapping[str, bytes] | None = None,
) -> str:
    """The report page; each class's figure from ``figures`` (drawn where the class was
    analysed), else drawn here."""
    esc = html.escape
    rows = "".join(
        f"<tr><td>{esc(c)}</td><td>{_verdict(s)}</td>"
        f"<td>{esc(', '.join(s['drifted_features']) or '-')}</td>"
        f"<td>{s['detected_at_chunk'] if s['detected_at_chunk'] is not None else '-'}</td>"
        f"<td>{s['chunks']}</td><td>{s['analysis_rows']}</td><td>{s['reference_rows']}</td>"
        f"<td>{_num(s['estimated'].get('roc_auc'))} / {_num(s['realised'].get('roc_auc'))}</td>"
        f"<td>{_num(s['estimated'].get('mae'))} / {_num(s['realised'].get('mae'))}</td>"
        f"<td>{_health_cell(s.get('health'))}</td></tr>"
        for c, s in sorted(summary["classes"].items())
    )
    triggers = "".join(
        f"<li>{esc(t['pump_class'])}: {'retrain submitted' if t['start'] else 'no retrain'}"
        f" ({esc(t['reason'])}){' · job ' + esc(t['job_id']) if t.get('job_id') else ''}</li>"
        for t in summary["triggers"]
    )
    notes = "".join(
        f"<li>{esc(c)}: {esc(m)}</li>" for c, m in sorted(summary["skipped"].items())
    ) + "".join(f"<li>{esc(n)}</li>" for n in summary["notes"])
    drawn = figures or {}
    class_figures = "".join(
        f"<h2>{esc(c)}</h2>{_img(drawn.get(c) or class_png(r), c)}"
        for c, r in sorted(results.items())
    )
    fleet_map = _img(map_png, "fleet drift map") if map_png else "<p>nothing to map</p>"
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>pumpfleet drift</title>"
        "<style>body{font-family:sans-serif}td,th{padding:3px 8px}</style></head><body>"
        f"<h1>pumpfleet drift report</h1><p>{summary['created']} · snapshot "
        f"{esc(summary['snapshot_id'])} · {summary['predictions']} predictions · chunks of "
        f"{summary['chunk_size']} · alert after {summary['policy']['consecutive']} drifted "
        f"chunks in a row · {esc(_methods(summary.get('drift_thresholds', {})))}, "
        "chi-squared (categorical), CBPE and DLE (estimated performance)</p>"
        "<table border='1'><tr><th>class</th><th>verdict</th><th>drifted features</th>"
        "<th>alert at chunk</th><th>chunks</th><th>served</th><th>reference</th>"
        "<th>ROC AUC est / real (last chunk)</th><th>MAE h est / real</th>"
        "<th>health (anomaly model)</th></tr>"
        f"{rows}</table><h2>Triggers</h2><ul>{triggers or '<li>none</li>'}</ul>"
        f"<h2>Notes</h2><ul>{notes or '<li>none</li>'}</ul>"
        f"<h2>Fleet drift map</h2>{fleet_map}{drivers_html(summary)}{health_html(summary)}"
        f"{class_figures}</body></html>"
    )


def drivers_html(summary: dict[str, Any], shown: int = 4) -> str:
    """Which sensors drive each class's alerts across the fleet (``alert_drivers``)."""
    esc = html.escape
    rows = []
    for c, s in sorted(summary["classes"].items()):
        d = s.get("alert_drivers")
        if not d:
            why = "no champion" if s.get("champion") is None else "not computed"
            rows.append(f"<tr><td>{esc(c)}</td><td colspan='3'>{why}</td></tr>")
            continue
        if not d["explained"]:
            rows.append(
                f"<tr><td>{esc(c)}</td><td>0 of {d['windows']}</td><td colspan='2'>the "
                "champion flags none of the reference windows it was validated on</td></tr>"
            )
            continue
        risk = list(d["risk_by_channel"].items())[:shown]
        sensors = ", ".join(
            f"{esc(ch)} {v:+.3f} (largest in {d['top_counts'].get(ch, 0)})" for ch, v in risk
        )
        rul = ", ".join(f"{esc(ch)} {d['rul_hours_by_channel'][ch]:+.1f}" for ch, _ in risk)
        rows.append(
            f"<tr><td>{esc(c)}</td><td>{d['explained']} of {d['flagged']} flagged "
            f"({d['windows']} windows)</td><td>{sensors}</td><td>{rul}</td></tr>"
        )
    if not rows:
        return ""
    return (
        "<h2>What drives each class's alerts</h2><p>Per class, the sensors that raise the "
        "champion's failure risk on the windows it flags: occlusion attributions "
        "(<code>pumpfleet.explain</code>, the champion's ONNX: each channel replaced by "
        "its regime's mean, the window scored again; the attribution is the risk minus the "
        "occluded risk), averaged over the flagged windows, with how many windows each "
        "sensor leads. The windows are the reference windows the champion was validated on "
        "(val, holdout and future of its snapshot), the most at risk first, at most 200 "
        "per class: the prediction log keeps only each served window's channel means, so "
        "served windows cannot be occluded. Read this beside the drifted features: it says "
        "which sensors the champion's alerts rest on, not what moved.</p>"
        "<table border='1'><tr><th>class</th><th>windows explained</th>"
        "<th>sensors by mean risk attribution (windows it leads)</th>"
        "<th>RUL attribution, h</th></tr>" + "".join(rows) + "</table>"
    )


def health_html(summary: dict[str, Any]) -> str:
    """The anomaly (health) models: alarm rate against its bound, score drift."""
    esc = html.escape
    rows = []
    for c, s in sorted(summary["classes"].items()):
        h = s.get("health")
        if not h:
            continue
        rows.append(
            f"<tr><td>{esc(c)}</td><td>v{esc(str(h['anomaly_champion']))}</td>"
            f"<td>{_health_cell(h)}</td><td>{h['scored_rows']}</td>"
            f"<td>{_pct(h['alarm_rate'])}</td><td>{_pct(h['target_far'])}</td>"
            f"<td>{_pct(h['reference_alarm_rate'])}</td>"
            f"<td>{_pct(h['last_alarm_rate'])} / {_pct(h['last_alarm_bound'])}</td>"
            f"<td>{h['alarm_rate_chunks']} / {h['score_drift_chunks']} of {h['chunks']}</td></tr>"
        )
    if not rows:
        return ""
    return (
        "<h2>Health (anomaly models)</h2><p>For each class whose anomaly model "
        "(<code>pumpfleet-&lt;class&gt;-anomaly@champion</code>) scored the served windows, "
        "on the rows that champion scored: the <b>alarm rate</b> per chunk against a "
        "binomial bound (a chunk alerts when the expected rate would give that many alarms "
        "with probability 0.1 % or less), where the expected rate is the calibrated "
        "false-alarm rate or, if higher, the rate the model raised on reference windows "
        "(pumps about to fail raise real alarms); and <b>drift of the health score</b> "
        "(Kolmogorov-Smirnov, the drift threshold) against the model's scores on the "
        "windows it did not train on (val, holdout and future of its snapshot). Alerts use "
        "the same hysteresis as drift. A health alert is reported, and starts no retrain by "
        "itself: more alarms may be real faults, for crews to rule out first. Every retrain "
        "of a class renews its health model too (<code>ray_jobs.retrain</code>, unless "
        "<code>--no-health</code>): <code>pumpfleet retrain --classes &lt;class&gt;</code> "
        "once the fleet is known to be healthy.</p>"
        "<table border='1'><tr><th>class</th><th>anomaly champion</th><th>verdict</th>"
        "<th>scored</th><th>alarm rate</th><th>calibrated rate</th>"
        "<th>reference rate</th><th>last chunk: rate / bound</th>"
        "<th>chunks alerting: rate / score drift</th></tr>" + "".join(rows) + "</table>"
    )


def _health_cell(h: dict[str, Any] | None) -> str:
    if not h:
        return "-"
    if h["alert_active"]:
        return "ALERT"
    return "alerted, cleared" if h["drifted"] else "ok"


def _pct(x: float | None) -> str:
    return "-" if x is None or np.isnan(x) else f"{100 * x:.1f} %"


METHOD_NAMES = {
    "wasserstein": "Wasserstein",
    "hellinger": "Hellinger",
    "kolmogorov_smirnov": "Kolmogorov-Smirnov",
    "jensen_shannon": "Jensen-Shannon",
    "pca": "PCA reconstruction error (multivariate)",
}


def _methods(thresholds: dict[str, float]) -> str:
    """The drift methods and their thresholds, for the report's header."""
    return ", ".join(
        f"{METHOD_NAMES.get(m, m)} over mean + {k:g} sd of reference chunks"
        for m, k in thresholds.items()
    )


def _num(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.2f}"


def _verdict(s: dict[str, Any]) -> str:
    return "ALERT" if s["alert_active"] else "drifted, cleared" if s["drifted"] else "ok"
