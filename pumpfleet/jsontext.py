"""Strict JSON for everything the project prints or writes for others to read (job
summaries, drift reports): a value that is not a finite number is ``null``, never the bare
``NaN`` / ``Infinity`` that Python writes by default and strict parsers refuse."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any


def plain(obj: Any) -> Any:
    """``obj`` with every non-finite float as None, numpy scalars and arrays as Python
    numbers and lists, and other objects (paths, times) as their text."""
    if obj is None or isinstance(obj, bool | int | str):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [plain(v) for v in obj]
    tolist = getattr(obj, "tolist", None)  # numpy scalars and arrays
    if callable(tolist):
        return plain(tolist())
    return str(obj)


def dumps(obj: Any, **kwargs: Any) -> str:
    """Strict JSON text of :func:`plain` ``(obj)``."""
    return json.dumps(plain(obj), allow_nan=False, **kwargs)
