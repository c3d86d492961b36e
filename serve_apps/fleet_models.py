"""The answers of the fleet routes (serve_apps/fleet_routes.py) as typed models, for the
OpenAPI schema the board and other clients read; the shapes of
:mod:`pumpfleet.fleet_views`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

Status = Literal["open", "acknowledged", "assigned", "closed"]


class Driver(BaseModel):
    sensor: str
    weight: float


class OpenAlert(BaseModel):
    id: int
    status: Status
    opened_at: str
    assignee: str | None


class Pump(BaseModel):
    pump_id: str
    pump_class: str
    site: str | None
    device_id: str | None
    last_reading_at: str | None
    rul_hours: float | None
    failure_probability: float | None
    model_version: str | None
    arm: str | None
    health_score: float | None
    anomaly: bool | None
    drivers: list[Driver]
    stale: bool
    open_alert: OpenAlert | None


class FleetPage(BaseModel):
    total: int
    pumps: list[Pump]


class HistoryEntry(BaseModel):
    at: str
    event: str
    by: str | None
    note: str | None


class Alert(BaseModel):
    id: int
    pump_id: str
    pump_class: str
    site: str | None
    horizon_hours: float
    status: Status
    opened_at: str
    risk: float
    assignee: str | None
    outcome: Literal["hit", "miss", "false_alarm"] | None
    lead_time_hours: float | None
    history: list[HistoryEntry]


class AlertPage(BaseModel):
    total: int
    alerts: list[Alert]


class Score(BaseModel):
    at: str
    rul_hours: float | None
    failure_probability: float | None
    model_version: str | None
    arm: str | None
    health_score: float | None
    anomaly: bool | None


class PumpDetail(BaseModel):
    pump: Pump
    scores: list[Score]
    alerts: list[Alert]
