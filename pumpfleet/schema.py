"""The canonical data model: sensor readings and failure / maintenance events.

Every real or simulated source is mapped into these schemas by an adapter; nothing
downstream knows where a row came from. A fleet dataset is a folder with ``readings/``
(Parquet, hive-partitioned by ``pump_class``) and ``events/`` (Parquet).
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    import pyarrow as pa


class PumpClass(StrEnum):
    """Pump classes of the fleet."""

    ESP = "esp"  # electric submersible pump
    ROD = "rod"  # sucker-rod (beam) pump
    PCP = "pcp"  # progressive-cavity pump
    CENTRIFUGAL = "centrifugal"  # surface centrifugal pump


class EventType(StrEnum):
    FAILURE = "failure"
    MAINTENANCE = "maintenance"


PUMP_CLASSES: Final = tuple(c.value for c in PumpClass)

# Operating settings: what the operator sets, not what the pump feels.
SETTING_COLUMNS: Final = ("speed_setpoint", "load_setpoint")

# Sensor channels, with their unit and the physical range outside which a value is
# a sensor fault rather than a reading.
CHANNELS: Final[dict[str, tuple[str, float, float]]] = {
    "intake_pressure": ("bar", 0.0, 400.0),
    "discharge_pressure": ("bar", 0.0, 600.0),
    "motor_temp": ("degC", -40.0, 250.0),
    "vibration": ("mm/s", 0.0, 100.0),
    "motor_current": ("A", 0.0, 1000.0),
    "flow": ("m3/d", 0.0, 20000.0),
}
CHANNEL_NAMES: Final = tuple(CHANNELS)

# Channels each class is instrumented with; the others are null in its rows.
CLASS_CHANNELS: Final[dict[str, tuple[str, ...]]] = {
    PumpClass.ESP: CHANNEL_NAMES,
    PumpClass.ROD: ("discharge_pressure", "motor_temp", "vibration", "motor_current", "flow"),
    PumpClass.PCP: ("intake_pressure", "discharge_pressure", "motor_temp", "motor_current", "flow"),
    PumpClass.CENTRIFUGAL: CHANNEL_NAMES,
}

KEY_COLUMNS: Final = ("pump_id", "pump_class", "site", "timestamp")
READING_COLUMNS: Final = KEY_COLUMNS + SETTING_COLUMNS + CHANNEL_NAMES
EVENT_COLUMNS: Final = ("pump_id", "pump_class", "site", "timestamp", "event_type", "detail")


def readings_schema() -> pa.Schema:
    """Arrow schema of one sensor reading (one row per pump per timestamp)."""
    import pyarrow as pa

    fields = [
        pa.field("pump_id", pa.string(), nullable=False),
        pa.field("pump_class", pa.string(), nullable=False),
        pa.field("site", pa.string(), nullable=False),
        pa.field("timestamp", pa.timestamp("ms", tz="UTC"), nullable=False),
    ]
    fields += [pa.field(c, pa.float64()) for c in SETTING_COLUMNS]
    fields += [pa.field(c, pa.float64()) for c in CHANNEL_NAMES]
    return pa.schema(fields)


def events_schema() -> pa.Schema:
    """Arrow schema of the failure and maintenance event table."""
    import pyarrow as pa

    return pa.schema(
        [
            pa.field("pump_id", pa.string(), nullable=False),
            pa.field("pump_class", pa.string(), nullable=False),
            pa.field("site", pa.string(), nullable=False),
            pa.field("timestamp", pa.timestamp("ms", tz="UTC"), nullable=False),
            pa.field("event_type", pa.string(), nullable=False),
            pa.field("detail", pa.string()),
        ]
    )
