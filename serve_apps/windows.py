"""Where a decoded batch's windows come from, and the one check they all pass.

A JSON item's window is cut from its readings when its model is known
(:class:`ReadingsWindows`: the usual items in one numpy conversion, any other one by one
through :func:`pumpfleet.features.readings_to_window`, which says what is wrong); an
Arrow batch's windows (each time-major, in the order of the model's inputs) are gathered
from one flat buffer (:class:`FlatWindows`): a Python loop over 24,000 values per 1,000
windows costs more than the model. Either way, the windows formed for a model are checked
by the one validation of readings every door applies
(:func:`pumpfleet.readings.window_problems`: finite, within each channel's physical
range, enough readings present), through :func:`checked`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import chain
from typing import Protocol

import numpy as np

from pumpfleet.errors import InputError
from pumpfleet.features import FeatureSpec, readings_to_window
from pumpfleet.readings import ranges, window_problems
from serve_apps.errors import Loc, split_message

Problems = dict[int, tuple[Loc, str]]  # item index → (where, what)


class Windows(Protocol):
    """Where a decoded body's windows come from."""

    def take(
        self, rows: list[int], spec: FeatureSpec, pump_class: str, strict: bool = True
    ) -> tuple[list[int], np.ndarray, Problems]:
        """The raw windows ``[k, W, C + S]`` of items ``rows`` for a model of ``spec``:
        (the rows that fit, their windows, the errors of those that do not). ``strict``:
        a reading the model does not know is an error."""
        ...


_BOUNDS: dict[int, tuple[FeatureSpec, np.ndarray, np.ndarray]] = {}


def _bounds(spec: FeatureSpec) -> tuple[np.ndarray, np.ndarray]:
    """:func:`pumpfleet.readings.ranges` of a served spec, worked out once per spec."""
    found = _BOUNDS.get(id(spec))
    if found is None or found[0] is not spec:
        if len(_BOUNDS) >= 256:  # specs of versions no longer served
            _BOUNDS.clear()
        found = _BOUNDS[id(spec)] = (spec, *ranges(spec))
    return found[1], found[2]


def plainly_fine(windows: np.ndarray, spec: FeatureSpec) -> bool:
    """True only where :func:`window_problems` would find nothing: every channel reading
    present and within its physical range, no setting infinite. The usual window takes
    this shortcut (a third of the time on the single-window route); any other goes
    through window_problems itself, which says what is wrong."""
    lo, hi = _bounds(spec)
    c = spec.n_channels
    x = windows[..., :c]
    return bool(((x >= lo) & (x <= hi)).all()) and not np.isinf(windows[..., c:]).any()


def checked(
    rows: list[int], windows: np.ndarray, spec: FeatureSpec, field: str, errors: Problems
) -> tuple[list[int], np.ndarray]:
    """The rows whose windows may be scored (:func:`window_problems`), and their windows;
    the others' problems go to ``errors``, under ``field`` and the channel."""
    if not rows or plainly_fine(windows, spec):
        return rows, windows
    problems = window_problems(windows, spec)
    if not any(problems):
        return rows, windows
    keep = []
    for j, problem in enumerate(problems):
        if problem is None:
            keep.append(j)
            continue
        loc, msg = split_message(InputError(problem))
        errors[rows[j]] = ([field, *loc[1:]], msg)
    return [rows[j] for j in keep], windows[keep]


def _stack(readings: list[dict[str, list[float | None]]], inputs: list[str], w: int) -> np.ndarray:
    """Readings, each input's ``w`` values, as ``[k, C + S, W]``; None as NaN."""
    shape = (len(readings), len(inputs), w)
    values = chain.from_iterable(r[c] for r in readings for c in inputs)
    try:  # a third faster than np.asarray of the lists, but takes no None
        return np.fromiter(values, dtype=np.float64, count=math.prod(shape)).reshape(shape)
    except TypeError:
        listed = [[r[c] for c in inputs] for r in readings]
        return np.asarray(listed, dtype=np.float64).reshape(shape)


class ReadingsWindows:
    """JSON items' windows, from each item's readings by channel: those whose readings
    are each input's ``window`` values at once (one numpy conversion), any other one by
    one through :func:`readings_to_window`, which says what is wrong."""

    def __init__(self, readings: Sequence[dict[str, list[float | None]] | None]) -> None:
        self.readings = readings

    def take(
        self, rows: list[int], spec: FeatureSpec, pump_class: str, strict: bool = True
    ) -> tuple[list[int], np.ndarray, Problems]:
        inputs, w = spec.inputs, spec.window
        whole: list[int] = []
        other: list[int] = []
        exact, lengths = set(inputs), {w}
        for i in rows:
            r = self.readings[i] or {}
            if r.keys() == exact:  # the usual item: its model's inputs, nothing else
                fits = set(map(len, r.values())) == lengths
            else:
                fits = all(len(r.get(c, ())) == w for c in inputs) and (
                    not strict or r.keys() <= spec.accepted
                )
            (whole if fits else other).append(i)
        # [k, C + S, W] → [k, W, C + S]; None becomes NaN, as readings_to_window has it
        stacked = _stack([self.readings[i] for i in whole], inputs, w)  # type: ignore[misc]
        stacked = np.ascontiguousarray(stacked.transpose(0, 2, 1))
        errors: Problems = {}
        if other:
            ok, each = self.one_by_one(other, spec, pump_class, strict, errors)
            if ok:
                order = np.argsort(np.asarray(whole + ok), kind="stable")
                whole = [(whole + ok)[j] for j in order]
                stacked = np.concatenate([stacked, each])[order]
        ok, stacked = checked(whole, stacked, spec, "readings", errors)
        return ok, stacked, errors

    def one_by_one(
        self, rows: list[int], spec: FeatureSpec, pump_class: str, strict: bool, errors: Problems
    ) -> tuple[list[int], np.ndarray]:
        """The windows of ``rows`` item by item, each one's problem to ``errors``."""
        ok: list[int] = []
        windows: list[np.ndarray] = []
        for i in rows:
            readings = self.readings[i] or {}
            unknown = sorted(set(readings) - spec.accepted) if strict else []
            if unknown:
                errors[i] = (["readings", unknown[0]], f"not a channel or setting of {pump_class}")
                continue
            try:
                windows.append(readings_to_window(readings, spec))
            except InputError as e:
                errors[i] = split_message(e)
                continue
            ok.append(i)
        if not windows:
            return ok, np.zeros((0, spec.window, len(spec.inputs)))
        return ok, np.stack(windows)


class FlatWindows:
    """Arrow items' windows, in one float64 buffer: each row's values time-major in the
    order of the model's inputs (a null reading as NaN)."""

    def __init__(self, flat: np.ndarray, lengths: np.ndarray) -> None:
        self.flat = flat
        self.lengths = lengths
        self.starts = np.cumsum(lengths) - lengths

    def take(
        self, rows: list[int], spec: FeatureSpec, pump_class: str, strict: bool = True
    ) -> tuple[list[int], np.ndarray, Problems]:
        w, f = spec.window, len(spec.inputs)
        at = np.asarray(rows, dtype=np.int64)
        fits = self.lengths[at] == w * f
        names = ", ".join(spec.inputs)
        errors: Problems = {
            int(i): (["window"], f"expected {w} x {f} values ({names}), got {self.lengths[i]}")
            for i in at[~fits]
        }
        ok = at[fits]
        if self.flat.size == len(self.lengths) * w * f and (self.lengths == w * f).all():
            # the usual batch, every row's window of this size: rows of one matrix
            windows = self.flat.reshape(-1, w, f)[ok]
        else:
            windows = self.flat[self.starts[ok][:, None] + np.arange(w * f)].reshape(-1, w, f)
        rows, windows = checked(ok.tolist(), windows, spec, "window", errors)
        return rows, windows, errors
