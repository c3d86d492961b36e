"""The canonical data model: sensor readings and failure / maintenance events.

Every real or simulated source is mapped into these schemas by an adapter; nothing
downstream knows where a row came from. A fleet dataset is a folder with ``readings/``
(Parquet, hive-partitioned by ``pump_class``), ``events/`` (Parquet) and ``fleet.json``:
the dataset's :class:`FleetSchema` (its classes, channels with their physical ranges, and
settings). A dataset without ``fleet.json`` is a pump fleet (:func:`pump_fleet_schema`).
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Final

from pydantic import BaseModel, Field, model_validator

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
    """Arrow schema of one pump-fleet reading (one row per pump per timestamp)."""
    return pump_fleet_schema().readings_schema()


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


FLEET_FILE = "fleet.json"


class ChannelSpec(BaseModel):
    """A channel's unit, its physical range, and the sensor-fault checks that suit it.

    ``stuck_after``: so many identical readings in a row mean a stuck sensor (leave
    unset for quantised channels, which repeat legitimately). ``spike_ratio``: a reading
    further than this share of the local median (over five readings) from it is a spike
    (leave unset where a sudden excursion may be the event itself, as in SKAB).
    """

    unit: str
    min: float
    max: float
    stuck_after: int | None = Field(default=None, ge=2)
    spike_ratio: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> ChannelSpec:
        if self.min >= self.max:
            raise ValueError("min must be below max")
        return self


class FleetSchema(BaseModel):
    """What a fleet dataset holds: its classes, each class's channels, the physical
    range of every channel (outside it a value is a sensor fault), and the settings."""

    name: str = "pumps"
    settings: list[str] = Field(default_factory=lambda: list(SETTING_COLUMNS))
    channels: dict[str, ChannelSpec]
    classes: dict[str, list[str]] = Field(min_length=1)
    interval_seconds: float = Field(default=3600.0, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> FleetSchema:
        for cls, chans in self.classes.items():
            unknown = [c for c in chans if c not in self.channels]
            if unknown:
                raise ValueError(f"class {cls} lists unknown channels {unknown}")
        clash = set(self.channels) & (set(KEY_COLUMNS) | set(self.settings))
        if clash:
            raise ValueError(f"channel names clash with key or setting columns: {sorted(clash)}")
        return self

    @property
    def channel_names(self) -> tuple[str, ...]:
        return tuple(self.channels)

    def readings_schema(self) -> pa.Schema:
        import pyarrow as pa

        fields = [
            pa.field("pump_id", pa.string(), nullable=False),
            pa.field("pump_class", pa.string(), nullable=False),
            pa.field("site", pa.string(), nullable=False),
            pa.field("timestamp", pa.timestamp("ms", tz="UTC"), nullable=False),
        ]
        fields += [pa.field(c, pa.float64()) for c in self.settings]
        fields += [pa.field(c, pa.float64()) for c in self.channels]
        return pa.schema(fields)


def pump_fleet_schema() -> FleetSchema:
    """The schema of a pump fleet: the simulator's, and any dataset without fleet.json."""
    # The pumps' analogue sensors are noisy floats: an exact repeat six readings long is
    # a stuck sensor, and a reading twice its neighbours' level is a spike.
    return FleetSchema(
        channels={
            c: ChannelSpec(unit=u, min=lo, max=hi, stuck_after=6, spike_ratio=1.0)
            for c, (u, lo, hi) in CHANNELS.items()
        },
        classes={str(k): list(v) for k, v in CLASS_CHANNELS.items()},
    )


def read_fleet_schema(dataset: str) -> FleetSchema:
    """The dataset's fleet.json, or the pump fleet schema if it has none."""
    from pumpfleet import storage

    uri = storage.join(dataset, FLEET_FILE)
    if not storage.exists(uri):
        return pump_fleet_schema()
    return FleetSchema.model_validate_json(storage.read_bytes(uri))


def write_fleet_schema(dataset: str, fleet: FleetSchema) -> None:
    from pumpfleet import storage

    storage.write_bytes(storage.join(dataset, FLEET_FILE), fleet.model_dump_json(indent=2).encode())
