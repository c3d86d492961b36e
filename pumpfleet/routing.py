"""Champion / challenger traffic assignment: sticky by pump, pure."""

from __future__ import annotations

import hashlib
from enum import StrEnum


class Arm(StrEnum):
    CHAMPION = "champion"
    CHALLENGER = "challenger"


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
