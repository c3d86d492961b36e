"""The demo's summary: what each step did, as `pumpfleet demo` prints it at the end."""

from __future__ import annotations

from typing import Any

from pumpfleet.tables import format_table
from pumpfleet_cli.demo_fleet import work_list_lines
from pumpfleet_cli.demo_loop import DRIFT_CHANNEL, DRIFT_FACTOR


def summary_text(result: dict[str, Any]) -> str:
    ing = result["ingest"]
    ev = result["evaluate"]["classes"]
    tr = result["train"]["classes"]
    ex = result["export"]["bundles"]
    mon = result["monitor"]
    rows = []
    for cls in sorted(ev):
        e = ev[cls]
        m = mon["classes"].get(cls, {})
        verdict = "DRIFT: " + ",".join(m["drifted_features"]) if m.get("drifted") else "ok"
        rows.append(
            [
                cls,
                sum(ing["windows"][cls].values()),
                f"{tr[cls]['val_rmse']:.1f}" if cls in tr else "-",
                f"{e['challenger_report']['rmse']:.1f}",
                f"{e['baseline_report']['rmse']:.1f}",
                f"v{e['champion']}" if e["champion"] else "-",
                f"v{e['challenger']}",
                ex[cls]["bundle"].rsplit("/", 1)[-1] if cls in ex else "-",
                m.get("analysis_rows", 0),
                verdict if m else "-",
            ]
        )
    table = format_table(
        [
            "class",
            "windows",
            "val RMSE h",
            "holdout RMSE h",
            "baseline RMSE h",
            "champion",
            "challenger",
            "bundle",
            "served",
            "drift",
        ],
        rows,
    )
    serve = result["serve"]
    lines = [
        "",
        "pumpfleet demo: summary",
        f"rows ingested: {ing['rows_in']} ({ing['rows_valid']} valid, "
        f"{ing['rows_quarantined']} quarantined) · snapshot {ing['snapshot_id']}"
        f"{' (up to date, reused)' if ing.get('up_to_date') else ''} · "
        f"{result['train']['trials']} Tune trials",
        "",
        table,
        "",
        f"requests served per arm: {serve['arms']} · HTTP status counts: {serve['status']} · "
        f"logged: {serve['logged']}",
        f"drifted classes: {', '.join(mon['drifted_classes']) or 'none'} "
        f"(demo injects +{DRIFT_FACTOR - 1:.0%} on {result['drift_class']} {DRIFT_CHANNEL} "
        "in the later two thirds of the requests)",
        *health_lines(result),
        *work_list_lines(result.get("work_list"), result.get("board_url")),
        *loop_lines(result),
        f"bundles: {', '.join(b['bundle'] for b in ex.values())}",
        f"bundle signing public key: {result['export']['public_key_file']}",
        f"drift report: {mon['report']}",
        f"fleet drift map: {mon['drift_map']}",
        f"wall time: {result['seconds']} s"
        + (
            f" (per step: {', '.join(f'{i}: {t} s' for i, t in enumerate(steps, 1))})"
            if (steps := result.get("step_seconds"))
            else ""
        ),
    ]
    return "\n".join(lines)


def health_lines(result: dict[str, Any]) -> list[str]:
    """The health models: which were promoted, and what share of windows each flagged
    before the drift and after."""
    trained, rates = result["health"]["classes"], result["health_rates"]

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{x:.0%}"

    kept = [c for c in sorted(trained) if not trained[c].get("promoted")]
    lines = [
        f"health model: {c} v{r['version']} flags {pct(r['calm'])} of windows before the "
        f"drift ({pct(r.get('calm_false'))} of those from pumps running as new), "
        f"{pct(r['later'])} after"
        f"{' (the drifted class)' if c == result['drift_class'] else ''}"
        for c, r in sorted(rates.items())
    ]
    if kept:
        why = [f"{c} ({trained[c].get('promotion') or trained[c].get('gate')})" for c in kept]
        lines.append(f"health models kept out: {', '.join(why)}")
    return lines


def loop_lines(result: dict[str, Any]) -> list[str]:
    """The closed loop in the summary: alert → retrain → A/B → promotion."""
    mon, loop = result["monitor"], result["closed_loop"]
    lines = []
    for c in mon["alerting_classes"]:
        s = mon["classes"][c]
        lines.append(
            f"monitor: {c} alerts from chunk {s['detected_at_chunk']} of {s['chunks']} "
            f"({', '.join(s['drifted_features']) or 'multivariate'}); estimated RUL MAE "
            f"{s['estimated'].get('mae', float('nan')):.1f} h in the last chunk"
        )
    for t in mon["triggers"]:
        lines.append(f"trigger: {t['pump_class']}: {'retrain' if t['start'] else 'none'} "
                     f"({t['reason']})")  # fmt: skip
    if loop is None:
        return [*lines, "closed loop: no retrain was triggered"]
    ab = loop["ab"]
    lo, hi = ab["ci"]
    return [
        *lines,
        f"retrain: the next {result['demo_days']} days ({loop['new_readings']} readings, "
        f"{loop['pump_class']} {DRIFT_CHANNEL} +{DRIFT_FACTOR - 1:.0%} throughout) → snapshot "
        f"{loop['snapshot_id']} → {loop['pump_class']} challenger v{loop['challenger']}",
        f"A/B on post-drift data ({ab['windows']} windows of {ab['pumps']} pumps, paired): "
        f"champion v{ab['champion']} RMSE {ab['champion_rmse']:.1f} h, challenger "
        f"v{ab['challenger']} {ab['challenger_rmse']:.1f} h, difference "
        f"{ab['difference']:.1f} h [{lo:.1f}, {hi:.1f}] → {ab['verdict']}",
        *(
            [
                f"health model retrained on the new data: {loop['pump_class']} "
                f"v{loop['health']['version']} registered as challenger ({loop['health']['gate']})"
                if loop["health"].get("registered")
                else f"health model not retrained: {loop['health'].get('gate')}"
            ]
            if loop.get("health")
            else []
        ),
        f"promotion: v{loop['challenger']} "
        f"{'promoted' if loop['promoted'] else 'not promoted'} by the gates "
        f"({loop['decision']}); champion now v{loop['champion_after']}",
    ]
