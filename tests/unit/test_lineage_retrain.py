"""A retrain reads the fleet and the ingest settings recorded with the champion's
snapshot, whoever asked for it (the monitor, ``POST /v1/admin/retrain``, the scheduler):
not the workspace's default data, not the default windows. Without Ray: the retrain's Ray
steps are ``test_retraining``'s fakes; the registry and the gates are real."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pumpfleet.errors import InputError
from pumpfleet.registry import CHAMPION, Registry, model_name
from pumpfleet.retraining import retrain_data, run_retrain
from pumpfleet.settings import Settings
from pumpfleet.windows import WindowConfig
from tests.unit.test_lifecycle import HOLDOUT_RUL, NAME, register, ws
from tests.unit.test_retraining import FakeSteps

__all__ = ["ws"]  # the fixture, shared with test_lifecycle

FLEET = "s3://pumpfleet-fleet/fleet"
FIFTY = WindowConfig(window=50, stride=2, horizon_hours=24.0, interval_seconds=3600.0)


def _record(settings: Settings, snapshot: str, source: str, cfg: WindowConfig) -> None:
    """What ingest records in a snapshot's manifest: its fleet and its settings."""
    path = Path(settings.features_uri) / snapshot / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest |= {"summary": {"source": source, "rows_in": 0}, "config": cfg.model_dump()}
    path.write_text(json.dumps(manifest))


def _champion(reg: Registry, snapshot: str) -> str:
    version = register(reg, HOLDOUT_RUL)
    reg.set_version_tags(NAME, version, {"feature_snapshot": snapshot})
    reg.set_alias(NAME, CHAMPION, version)
    return version


def test_a_drift_retrain_ingests_the_champions_fleet_with_its_settings(
    ws: tuple[Settings, Registry],
) -> None:
    settings, reg = ws
    _record(settings, "snap1", FLEET, FIFTY)
    _champion(reg, "snap1")
    fake = FakeSteps(reg)
    out = run_retrain(settings, fake.steps(), ["esp"], reason="drift on esp: motor_temp")
    assert fake.calls[0] == ("ingest", (FLEET, settings.features_uri, FIFTY))
    assert (out["source"], out["settings_of_snapshot"]) == (FLEET, "snap1")
    assert out["ingest_config"]["window"] == 50
    # A fleet named by the request replaces the recorded one; the settings stay.
    other = FakeSteps(reg)
    run_retrain(settings, other.steps(), ["esp"], source="s3://elsewhere/fleet")
    assert other.calls[0] == ("ingest", ("s3://elsewhere/fleet", settings.features_uri, FIFTY))


def test_without_a_champion_the_latest_snapshot_says_and_else_the_defaults(
    ws: tuple[Settings, Registry],
) -> None:
    settings, _ = ws
    assert retrain_data(settings, ["esp"]) == (
        retrain_data(settings, None)  # the same for every class
    )
    bare = retrain_data(settings, ["esp"])  # snap1 records nothing: the defaults
    assert (bare.source, bare.config, bare.recorded_with) == (
        settings.data_uri,
        WindowConfig(),
        None,
    )
    _record(settings, "snap1", FLEET, FIFTY)
    latest = retrain_data(settings, ["esp"])
    assert (latest.source, latest.config, latest.recorded_with) == (FLEET, FIFTY, "snap1")


def test_champions_ingested_differently_are_retrained_one_at_a_time(
    ws: tuple[Settings, Registry],
) -> None:
    settings, reg = ws
    root = Path(settings.features_uri)
    shutil.copytree(root / "snap1", root / "snap2")
    _record(settings, "snap1", FLEET, FIFTY)
    _record(settings, "snap2", "s3://pumpfleet-fleet/other", WindowConfig())
    _champion(reg, "snap1")
    rod = model_name("rod")
    reg.client.create_registered_model(rod)
    source = reg.client.get_model_version(NAME, reg.version_by_alias(NAME, CHAMPION)).source
    version = reg.client.create_model_version(rod, source, tags={"feature_snapshot": "snap2"})
    reg.set_alias(rod, CHAMPION, str(version.version))
    assert retrain_data(settings, ["esp"]).config == FIFTY
    assert retrain_data(settings, ["rod"]).source == "s3://pumpfleet-fleet/other"
    with pytest.raises(InputError, match=r"ingested differently .* one at a time"):
        retrain_data(settings, None)
