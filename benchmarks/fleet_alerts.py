"""The crews' alerts on a workspace's fleet (after ``make demo``): the champion of each
served class scores the windows it never trained on (the holdout pumps and the time
holdout, ``future``) in reading-time order into a fresh fleet database, the dataset's
failures and maintenance arrive as feedback at their times, and the alerts are marked
hit, miss or false alarm (pumpfleet/fleet_alerts.py).

    python -m benchmarks.fleet_alerts [--db-url URL]

Baseline in the same run: the per-window rule (an alert on every window at or above the
threshold, cleared by the first below: ``open_after=1, clear_after=1, lower_band=1``),
against the service's hysteresis rules. Prints precision, misses, alerts and the median
lead time of each, the ratios, the feed's rows per second, and ends with one
``key=value`` line.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.dataset as pads

from pumpfleet import fleet_views as views
from pumpfleet import storage
from pumpfleet.fleet_alerts import AlertRules
from pumpfleet.fleet_store import FleetDB, ScoredRow
from pumpfleet.registry import CHAMPION, Registry, model_name
from pumpfleet.scoring import score_windows
from pumpfleet.settings import get_settings, quiet_telemetry
from pumpfleet.snapshot import open_snapshot

SPLITS = ("holdout", "future")
H = 3600.0


def scored_rows(settings: Any) -> tuple[list[ScoredRow], dict[str, tuple[float, float, float]]]:
    """Every unseen window of each served class, scored by its champion, and per pump
    (first reading, last reading, horizon hours)."""
    snap = open_snapshot(settings.features_uri)
    registry = Registry(settings.tracking_uri)
    rows: list[ScoredRow] = []
    span: dict[str, tuple[float, float, float]] = {}
    for cls in snap.classes:
        if registry.version_by_alias(model_name(cls), CHAMPION) is None:
            continue
        model = registry.load(model_name(cls), CHAMPION)
        spec, run = model.spec, model.runner()
        for split in SPLITS:
            try:
                raw, cols = snap.load(cls, split, spec)
            except Exception:  # a split with no windows of the class
                continue
            if not len(raw):
                continue
            scores = score_windows(raw, spec, run).rul
            at = cols["end_time"].astype("datetime64[ms]").astype(np.int64) / 1e3
            for j in range(len(raw)):
                pump = str(cols["pump_id"][j])
                first, last, _ = span.get(pump, (at[j], at[j], spec.horizon_hours))
                span[pump] = (min(first, at[j]), max(last, at[j]), spec.horizon_hours)
                rows.append(
                    ScoredRow(
                        pump, cls, float(at[j]), float(scores.rul_hours[j]),
                        float(scores.failure_probability[j]), model.version, "champion",
                        site=str(cols["site"][j]), threshold=spec.alert_threshold,
                        horizon_hours=spec.horizon_hours,
                    )
                )  # fmt: skip
    return sorted(rows, key=lambda r: r.at), span


def events(
    settings: Any, span: dict[str, tuple[float, float, float]]
) -> list[tuple[float, str, bool]]:
    """The dataset's failures and maintenance of the replayed pumps, where the model had
    a horizon's worth of windows before them: (time, pump, is a failure)."""
    files = storage.list_files(storage.join(settings.data_uri, "events"), ".parquet")
    fs, _ = storage.resolve(settings.data_uri)
    table = pads.dataset(files, filesystem=fs, format="parquet").to_table().to_pandas()
    out = []
    for e in table.itertuples():
        pump = str(e.pump_id)
        if pump not in span:
            continue
        first, last, horizon = span[pump]
        t = e.timestamp.value / 1e9
        if first + horizon * H <= t <= last + H:
            out.append((t, pump, e.event_type == "failure"))
    return sorted(out)


def replay(
    url: str, rules: AlertRules, rows: list[ScoredRow], happened: list[tuple[float, str, bool]]
) -> tuple[dict[str, Any], float]:
    """The rows and events in time order through a fresh database; its figures and the
    feed's rows per second."""
    db = FleetDB(url, rules, clock=lambda: rows[-1].at if rows else 0.0)
    started = time.perf_counter()
    i, batch = 0, list[ScoredRow]()
    for r in rows:
        while i < len(happened) and happened[i][0] <= r.at:
            if batch:
                db.ingest(batch)
                batch = []
            t, pump, failure = happened[i]
            db.feedback(pump, t, failure)
            i += 1
        batch.append(r)
        if len(batch) >= 256:
            db.ingest(batch)
            batch = []
    db.ingest(batch)
    for t, pump, failure in happened[i:]:
        db.feedback(pump, t, failure)
    seconds = time.perf_counter() - started
    db.settle(now=(rows[-1].at if rows else 0.0) + 10 * 24 * H)
    f: dict[str, Any] = dict(views.alert_figures(db.engine).as_dict())
    f["alerts"] = views.alert_list(db.engine, limit=1)["total"]
    f["top"] = views.work_list(db, 5)
    db.close()
    return f, len(rows) / seconds if seconds else 0.0


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--db-url", default=None, help="an empty database (default: SQLite in a tmp dir)"
    )
    args = p.parse_args(argv)
    settings = get_settings()
    quiet_telemetry(settings)
    load = os.getloadavg()[0]
    rows, span = scored_rows(settings)
    happened = events(settings, span)
    print(f"{len(rows)} windows of {len(span)} pumps, {len(happened)} events "
          f"({sum(f for *_, f in happened)} failures); load average {load:.1f}")  # fmt: skip
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, rules in (
            ("per-window (baseline)", AlertRules(open_after=1, clear_after=1, lower_band=1.0)),
            ("hysteresis (served)", AlertRules()),
        ):
            url = (
                args.db_url
                if args.db_url and name.startswith("hys")
                else f"sqlite:///{Path(tmp) / (name[:3] + '.db')}"
            )
            results[name] = replay(url, rules, rows, happened)
    base, served = results["per-window (baseline)"][0], results["hysteresis (served)"][0]
    print(f"{'rules':<24}{'alerts':>8}{'hits':>6}{'false':>7}{'misses':>8}{'precision':>11}"
          f"{'median lead h':>15}{'rows/s':>9}")  # fmt: skip
    for name, (f, rate) in results.items():
        prec = "-" if f["precision"] is None else f"{f['precision']:.3f}"
        lead = "-" if f["median_lead_time_hours"] is None else f"{f['median_lead_time_hours']:.1f}"
        print(f"{name:<24}{f['alerts']:>8}{f['hits']:>6}{f['false_alarms']:>7}{f['misses']:>8}"
              f"{prec:>11}{lead:>15}{rate:>9.0f}")  # fmt: skip

    def ratio(key: str) -> str:
        a, b = served[key], base[key]
        return "-" if not a or not b else f"{a / b:.2f}"

    print(f"ratio served/baseline: alerts {ratio('alerts')}, precision {ratio('precision')}, "
          f"median lead {ratio('median_lead_time_hours')}")  # fmt: skip
    print("top 5 of the work list at the end of the replay:")
    for p_ in served["top"]:
        drivers = ", ".join(d["sensor"] for d in p_["drivers"]) or "-"
        risk, rul = p_["failure_probability"], p_["rul_hours"]
        print(f"  {p_['pump_id']:<22} {risk:.3f}  RUL {rul:.0f} h  {drivers}")
    prec = served["precision"]
    lead = served["median_lead_time_hours"]
    print(f"load average after {os.getloadavg()[0]:.1f}")
    print(f"fleet_alerts_precision={'nan' if prec is None else f'{prec:.3f}'} "
          f"median_lead_time_hours={'nan' if lead is None else f'{lead:.1f}'}")  # fmt: skip


if __name__ == "__main__":
    main()
