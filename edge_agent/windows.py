"""Rolling windows per pump, across files and restarts: a pure function from the pumps'
saved state and new readings to the windows to score and the new state.

Windows are cut by training's rule (:func:`pumpfleet.features.max_span_ms`): a candidate
every ``stride`` readings once ``window`` readings are in, kept only if its first and last
readings are no further apart than that span. So the device scores exactly the windows
training would have kept from the same readings, and none that it would have dropped.

A pump's state is its last ``window - 1`` readings with their times, the readings since
the last candidate window (the stride's phase) and the inputs its rows hold. A reading not
newer than the pump's last is stale (a replay) and skipped; a model with other inputs
starts the window afresh.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edge_agent.source import Reading
from pumpfleet.features import FeatureSpec, max_span_ms

Row = list[float | None]


@dataclass
class Cut:
    windows: list[list[Row]] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)  # ns of each window's last reading
    pumps: list[str] = field(default_factory=list)
    states: dict[str, dict[str, Any]] = field(default_factory=dict)
    stale: int = 0
    gaps: int = 0  # candidate windows not formed: their readings span a gap
    resets: int = 0


def fresh(spec: FeatureSpec, ts: int | None = None) -> dict[str, Any]:
    return {"rows": [], "times": [], "ts": ts, "since": spec.stride - 1, "inputs": spec.inputs}


def roll(states: dict[str, dict[str, Any]], readings: list[Reading], spec: FeatureSpec) -> Cut:
    """The windows that ``readings`` complete, given each pump's saved state."""
    cut = Cut()
    max_span_ns = max_span_ms(spec.window, spec.interval_seconds) * 1e6
    by_pump: dict[str, list[Reading]] = {}
    for r in sorted(readings, key=lambda r: (r.pump_id, r.ts_ns)):
        by_pump.setdefault(r.pump_id, []).append(r)
    for pump_id, rows in by_pump.items():
        saved = states.get(pump_id) or fresh(spec)
        if saved.get("inputs", spec.inputs) != spec.inputs or "times" not in saved:
            # Another model's readings (a new bundle, or a rollback, with other
            # channels), or a state saved before readings kept their times.
            saved = fresh(spec, saved["ts"])
            cut.resets += 1
        buf: list[Row] = [list(row) for row in saved["rows"]]
        times: list[int] = list(saved["times"])
        ts, since = saved["ts"], saved["since"]
        for r in rows:
            if ts is not None and r.ts_ns <= ts:
                cut.stale += 1
                continue
            buf = [*buf, [r.values.get(c) for c in spec.inputs]][-spec.window :]
            times = [*times, r.ts_ns][-spec.window :]
            ts, since = r.ts_ns, since + 1
            if len(buf) == spec.window and since >= spec.stride:
                since = 0
                if times[-1] - times[0] > max_span_ns:
                    cut.gaps += 1
                    continue
                cut.windows.append(buf)
                cut.ends.append(r.ts_ns)
                cut.pumps.append(pump_id)
        cut.states[pump_id] = {
            "rows": buf[-(spec.window - 1) :],
            "times": times[-(spec.window - 1) :],
            "ts": ts,
            "since": since,
            "inputs": spec.inputs,
        }
    return cut
