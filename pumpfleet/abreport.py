"""The A/B report: realised per-arm metrics from the prediction log joined with feedback.

A prediction made at ``t`` for a pump learns its true RUL from the first feedback on that
pump after ``t``: a failure at ``failed_at`` gives ``(failed_at - t)`` hours, a RUL seen in
hindsight at ``observed_at`` gives ``rul_hours + (observed_at - t)`` hours. Predictions
with no later feedback are not scored (yet). The true RUL is capped at the model's
``rul_cap_hours`` as its labels were in training: a model can only say "at least the
cap", so a pump that fails 900 h later is not 700 h of error on a 168 h prediction.

Confidence intervals come from a bootstrap over pumps, not over predictions: one pump's
predictions are strongly correlated, and resampling them one by one would give intervals
far too narrow. In shadow mode both models scored the same requests, so the difference
between them is paired (resampled together).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pumpfleet.tables import format_table

SHADOW = "shadow"  # the challenger's scores of shadowed requests
BOOTSTRAP = 1000
LEVEL = 0.95


@dataclass(frozen=True)
class ArmReport:
    pump_class: str
    arm: str
    versions: str
    predictions: int
    labelled: int
    pumps: int
    rmse: float
    rmse_ci: tuple[float, float]
    mae: float
    mae_ci: tuple[float, float]
    bias: float  # mean(predicted - true): > 0 means late warnings


@dataclass(frozen=True)
class Difference:
    """The challenger's RMSE minus the champion's (negative: the challenger is better)."""

    pump_class: str
    test: str  # "A/B" (different pumps) or "shadow (paired)" (the same requests)
    rmse_diff: float
    ci: tuple[float, float]

    @property
    def verdict(self) -> str:
        lo, hi = self.ci
        return "better" if hi < 0 else "worse" if lo > 0 else "no clear difference"


def capped(truth: pd.Series, classes: pd.Series, caps: Mapping[str, float] | None) -> pd.Series:
    """The true RUL capped at each row's class's ``rul_cap_hours`` (uncapped where the
    class has none in ``caps``)."""
    if not caps:
        return truth
    cap = classes.map(dict(caps)).to_numpy(dtype=float, na_value=np.nan)
    return pd.Series(np.fmin(truth.to_numpy(float), cap), index=truth.index)


def _truth(preds: pd.DataFrame, feedback: pd.DataFrame) -> pd.Series:
    """Each prediction's true RUL in hours (NaN where no feedback follows it), uncapped."""
    fb = feedback.copy()
    nothing = pd.Series(pd.NaT, index=fb.index)
    failed = pd.to_datetime(fb.get("failed_at", nothing), utc=True)
    observed = pd.to_datetime(fb.get("observed_at", nothing), utc=True)
    fb["ref"] = failed.fillna(observed)
    hindsight = pd.to_numeric(fb.get("rul_hours", np.nan), errors="coerce")
    fb["base_hours"] = np.where(failed.notna(), 0.0, hindsight).astype(float)
    fb = fb.dropna(subset=["ref", "base_hours"]).sort_values("ref")
    p = preds[["pump_id", "timestamp"]].copy()
    p["timestamp"] = pd.to_datetime(p["timestamp"], utc=True)
    p["_row"] = np.arange(len(p))
    p = p.sort_values("timestamp")
    joined = pd.merge_asof(
        p,
        fb[["pump_id", "ref", "base_hours"]],
        left_on="timestamp",
        right_on="ref",
        by="pump_id",
        direction="forward",
    )
    hours = (joined["ref"] - joined["timestamp"]).dt.total_seconds() / 3600.0
    truth = joined["base_hours"] + hours
    return pd.Series(truth.to_numpy(float), index=joined["_row"].to_numpy()).sort_index()


def _ci(values: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    lo, hi = np.nanpercentile(values, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    return float(lo), float(hi)


def _bootstrap(
    err: np.ndarray, pumps: np.ndarray, rng: np.random.Generator, n: int = BOOTSTRAP
) -> tuple[np.ndarray, np.ndarray]:
    """RMSE and MAE over ``n`` resamples of the pumps (each with all its predictions)."""
    codes, uniq = pd.factorize(pumps)
    k = len(uniq)
    sq = np.bincount(codes, weights=err**2, minlength=k)
    ab = np.bincount(codes, weights=np.abs(err), minlength=k)
    cnt = np.bincount(codes, minlength=k).astype(float)
    draws = rng.integers(0, k, size=(n, k))
    w = np.stack([np.bincount(d, minlength=k) for d in draws]).astype(float)
    total = w @ cnt
    return np.sqrt((w @ sq) / total), (w @ ab) / total


def arm_reports(
    log: pd.DataFrame,
    feedback: pd.DataFrame,
    seed: int = 0,
    rul_cap_hours: Mapping[str, float] | None = None,
) -> tuple[list[ArmReport], list[Difference]]:
    """Per class and arm (and the shadow challenger) the realised metrics, and per class
    the challenger's RMSE minus the champion's with its interval; the true RUL capped at
    each class's ``rul_cap_hours`` (its champion's), as the predictions are."""
    if log.empty:
        return [], []
    rng = np.random.default_rng(seed)
    log = log.reset_index(drop=True)
    truth = _truth(log, feedback) if not feedback.empty else pd.Series(np.nan, index=log.index)
    truth = capped(truth, log["pump_class"], rul_cap_hours)
    reports: list[ArmReport] = []
    diffs: list[Difference] = []
    for cls, g in log.groupby("pump_class", sort=True):
        arms: dict[str, tuple[pd.DataFrame, np.ndarray, np.ndarray]] = {}
        for arm, a in g.groupby("arm", sort=True):
            arms[str(arm)] = (a, a["rul_hours"].to_numpy(float), truth.loc[a.index].to_numpy())
        if "shadow_rul_hours" in g and g["shadow_rul_hours"].notna().any():
            s = g[g["shadow_rul_hours"].notna()]
            arms[SHADOW] = (s, s["shadow_rul_hours"].to_numpy(float), truth.loc[s.index].to_numpy())
        boots: dict[str, np.ndarray] = {}
        for arm, (a, pred, tr) in arms.items():
            ok = ~np.isnan(tr)
            err = pred[ok] - tr[ok]
            pumps = a["pump_id"].to_numpy()[ok]
            version_col = "shadow_version" if arm == SHADOW else "model_version"
            versions = ",".join(sorted({f"v{v}" for v in a[version_col].dropna()}))
            if ok.any():
                rmse_b, mae_b = _bootstrap(err, pumps, rng)
                boots[arm] = rmse_b
                rmse, mae = float(np.sqrt(np.mean(err**2))), float(np.mean(np.abs(err)))
                rmse_ci, mae_ci, bias = _ci(rmse_b), _ci(mae_b), float(err.mean())
            else:
                rmse = mae = bias = float("nan")
                rmse_ci = mae_ci = (float("nan"), float("nan"))
            reports.append(
                ArmReport(
                    str(cls),
                    arm,
                    versions,
                    len(a),
                    int(ok.sum()),
                    len(set(pumps)),
                    rmse,
                    rmse_ci,
                    mae,
                    mae_ci,
                    bias,
                )
            )
        diffs += _differences(str(cls), arms, boots, rng)
    return reports, diffs


def _differences(
    cls: str,
    arms: dict[str, tuple[pd.DataFrame, np.ndarray, np.ndarray]],
    boots: dict[str, np.ndarray],
    rng: np.random.Generator,
) -> list[Difference]:
    out: list[Difference] = []
    if "challenger" in boots and "champion" in boots:  # A/B: independent samples of pumps
        d = boots["challenger"] - boots["champion"]
        out.append(Difference(cls, "A/B", float(np.median(d)), _ci(d)))
    if SHADOW in boots:  # shadow: the same requests, paired by resampling pumps together
        a, pred, tr = arms[SHADOW]
        ok = ~np.isnan(tr)
        champ = a["rul_hours"].to_numpy(float)[ok] - tr[ok]
        chall = pred[ok] - tr[ok]
        pumps = a["pump_id"].to_numpy()[ok]
        codes, uniq = pd.factorize(pumps)
        k = len(uniq)
        sq_c = np.bincount(codes, weights=champ**2, minlength=k)
        sq_s = np.bincount(codes, weights=chall**2, minlength=k)
        cnt = np.bincount(codes, minlength=k).astype(float)
        w = np.stack([np.bincount(x, minlength=k) for x in rng.integers(0, k, (BOOTSTRAP, k))])
        total = w @ cnt
        d = np.sqrt((w @ sq_s) / total) - np.sqrt((w @ sq_c) / total)
        point = float(np.sqrt(np.mean(chall**2)) - np.sqrt(np.mean(champ**2)))
        out.append(Difference(cls, "shadow (paired)", point, _ci(d)))
    return out


def format_report(reports: list[ArmReport], diffs: list[Difference]) -> str:
    if not reports:
        return "no predictions logged yet"

    def f(x: float) -> str:
        return "-" if np.isnan(x) else f"{x:.1f}"

    def ci(c: tuple[float, float]) -> str:
        return "-" if np.isnan(c[0]) else f"[{c[0]:.1f}, {c[1]:.1f}]"

    rows = [
        [r.pump_class, r.arm, r.versions, r.predictions, r.labelled, r.pumps,
         f(r.rmse), ci(r.rmse_ci), f(r.mae), ci(r.mae_ci), f(r.bias)]
        for r in reports
    ]  # fmt: skip
    head = ["class", "arm", "version", "predictions", "labelled", "pumps",
            "RMSE h", "95% CI", "MAE h", "95% CI", "bias h"]  # fmt: skip
    text = format_table(head, rows)
    if diffs:
        drows = [[d.pump_class, d.test, f(d.rmse_diff), ci(d.ci), d.verdict] for d in diffs]
        text += "\n\nchallenger RMSE minus champion RMSE (negative: the challenger is better)\n"
        text += format_table(["class", "test", "difference h", "95% CI", "verdict"], drows)
    return text
