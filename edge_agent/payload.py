"""MQTT messages into readings: a message's JSON mapped to the reading every door reads
(:class:`edge_agent.config.PayloadMap`), then parsed by the same rules as a spool line
(:func:`edge_agent.source.parse_object`, :mod:`pumpfleet.readings`). A message that
cannot be used is set aside with its reason, never raised.

Pure functions of the message: no client, no clock.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from edge_agent.config import PayloadMap
from edge_agent.source import KEYS, Parsed, SetAside, parse_object
from pumpfleet.errors import InputError
from pumpfleet.features import FeatureSpec

MAX_READINGS = 1000  # readings one message may carry (a JSON array)
_MISSING = object()


@dataclass(frozen=True)
class Message:
    """One message as the broker delivered it."""

    topic: str
    payload: bytes
    number: int  # its place in the batch, for the set-aside record


def _lookup(topic: str, obj: Any, path: str) -> Any:
    if path.startswith("topic:"):
        levels = topic.split("/")
        try:
            return levels[int(path.removeprefix("topic:"))]
        except (ValueError, IndexError):
            return _MISSING
    for key in path.split("."):
        if not isinstance(obj, dict) or key not in obj:
            return _MISSING
        obj = obj[key]
    return obj


def reading_object(topic: str, obj: Any, mapping: PayloadMap) -> dict[str, Any]:
    """The reading ``obj`` (one element of a message on ``topic``) stands for, as the
    mapping ``{"pump_id", "timestamp", <channel>: value, ...}`` every door reads.
    InputError where the mapping cannot be applied."""
    if not isinstance(obj, dict):
        raise InputError(f"not an object: {type(obj).__name__}")
    values = obj if mapping.values is None else _lookup(topic, obj, mapping.values)
    if not isinstance(values, dict):
        raise InputError(f"{mapping.values}: no object of values there")
    out = {k: v for k, v in values.items() if k not in KEYS}
    for name, path in (("pump_id", mapping.pump_id), ("timestamp", mapping.timestamp)):
        found = _lookup(topic, obj, path)
        if found is _MISSING:
            raise InputError(f"{name}: nothing at {path!r}")
        out[name] = found
    for name, path in mapping.fields.items():
        found = _lookup(topic, obj, path)
        out[name] = None if found is _MISSING else found
    return out


def parse_messages(
    messages: list[Message], spec: FeatureSpec, mapping: PayloadMap, max_bytes: int
) -> Parsed:
    """Every reading the messages carry; a message (or an element of one) that breaks
    the rules, or is over ``max_bytes``, is set aside with its reason, its topic and the
    start of its text."""
    out = Parsed()
    for m in messages:
        shown = f"{m.topic} {m.payload[:160]!r}"
        if len(m.payload) > max_bytes:
            why = f"{len(m.payload)} bytes, over the limit of {max_bytes}"
            out.set_aside.append(SetAside(m.number, why, shown))
            continue
        try:
            text = m.payload.decode()
        except UnicodeDecodeError:
            out.set_aside.append(SetAside(m.number, "not UTF-8 text", shown))
            continue
        shown = f"{m.topic} {text}"
        try:
            body = json.loads(text)
        except ValueError:
            out.set_aside.append(SetAside(m.number, "not JSON", shown))
            continue
        items = body if isinstance(body, list) else [body]
        if len(items) > MAX_READINGS:
            why = f"{len(items)} readings in one message, over {MAX_READINGS}"
            out.set_aside.append(SetAside(m.number, why, shown))
            continue
        for item in items:
            try:
                obj = reading_object(m.topic, item, mapping)
            except InputError as e:
                out.set_aside.append(SetAside(m.number, str(e), shown))
                continue
            parse_object(obj, m.number, shown, spec, out)
    return out
