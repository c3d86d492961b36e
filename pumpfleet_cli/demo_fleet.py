"""The demo's look at the fleet board: after scoring, the riskiest pumps of the work list
(as ``GET /v1/fleet`` and the board at ``/board`` rank them) with their drivers, read from
the fleet database the replicas' feed writes."""

from __future__ import annotations

import time
from typing import Any

from pumpfleet.fleet_schema import engine_for
from pumpfleet.fleet_views import fleet
from pumpfleet.settings import Settings

TOP = 5


def work_list_after_scoring(
    settings: Settings, pumps: int, seconds: float = 30.0
) -> dict[str, Any]:
    """The top of the work list once the feed has written ``pumps`` pumps (it writes off
    the request path, so shortly after the answers), or what it holds after ``seconds``:
    ``{"total": n, "pumps": [...]}``."""
    engine = engine_for(settings.fleet_db)
    deadline = time.monotonic() + seconds
    try:
        while True:
            got = fleet(engine, time.time(), float("inf"), limit=TOP)
            if got["total"] >= pumps or time.monotonic() > deadline:
                return got
            time.sleep(0.5)
    finally:
        engine.dispose()


def work_list_lines(work: dict[str, Any] | None, board_url: str | None) -> list[str]:
    """The summary's lines: one per pump, riskiest first, and where the board was."""
    if not work:
        return []
    lines = [f"work list, the {len(work['pumps'])} riskiest of {work['total']} pumps scored:"]
    for i, p in enumerate(work["pumps"], 1):
        drivers = ", ".join(d["sensor"] for d in p["drivers"]) or "-"
        alert = p["open_alert"]["status"] if p["open_alert"] else "no alert"
        rul = "-" if p["rul_hours"] is None else f"{p['rul_hours']:.0f} h"
        risk = "-" if p["failure_probability"] is None else f"{p['failure_probability']:.2f}"
        lines.append(
            f"  {i}. {p['pump_id']} ({p['pump_class']}): failure probability {risk}, "
            f"RUL {rul}, drivers {drivers}; {alert}"
        )
    if board_url:
        lines.append(f"fleet board: {board_url} (while the demo served; `pumpfleet serve` after)")
    return lines
