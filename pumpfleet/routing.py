"""Champion / challenger traffic assignment: sticky by pump, pure."""

from __future__ import annotations

import functools
import hashlib
from enum import StrEnum

# The class's A/B split, kept as tags on its registered RUL model so that every Serve
# replica (and one that restarts) serves the same split, and a retrain can start a test.
WEIGHT_TAG = "ab.challenger_weight"
SHADOW_TAG = "ab.shadow"


def split_tags(
    challenger_weight: float | None = None, shadow: bool | None = None
) -> dict[str, str]:
    """The registered-model tags that set a class's split (only those given)."""
    tags: dict[str, str] = {}
    if challenger_weight is not None:
        if not 0.0 <= challenger_weight <= 1.0:
            raise ValueError(f"challenger_weight must be in [0, 1], got {challenger_weight}")
        tags[WEIGHT_TAG] = str(float(challenger_weight))
    if shadow is not None:
        tags[SHADOW_TAG] = str(shadow).lower()
    return tags


class Arm(StrEnum):
    CHAMPION = "champion"
    CHALLENGER = "challenger"


@functools.lru_cache(maxsize=1 << 16)  # a fleet's pumps: a batch hashes each id once
def bucket(pump_id: str, salt: str = "") -> float:
    """A pump's fixed position in [0, 1), from a hash of the salt and its id."""
    digest = hashlib.sha256(f"{salt}\x00{pump_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def assign_arm(pump_id: str, challenger_weight: float, salt: str = "") -> Arm:
    """The arm that scores ``pump_id``: a pump stays on its arm while the weight and
    the salt stay; raising the weight only moves champion pumps to the challenger."""
    if not 0.0 <= challenger_weight <= 1.0:
        raise ValueError(f"challenger_weight must be in [0, 1], got {challenger_weight}")
    return Arm.CHALLENGER if bucket(pump_id, salt) < challenger_weight else Arm.CHAMPION
