"""The Serve config that `serve deploy` takes, and the app's typed argument."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from pumpfleet.registry import CHALLENGER, CHAMPION, STAGING
from pumpfleet.routing import Arm
from serve_apps.schemas import ScoringConfig

CONFIG = Path(__file__).resolve().parents[2] / "serve_apps" / "serve_config.yaml"


def test_the_serve_config_is_a_valid_deploy_config_for_both_apps() -> None:
    from ray.serve.schema import ServeDeploySchema

    raw = yaml.safe_load(CONFIG.read_text())
    schema = ServeDeploySchema.model_validate(raw)
    apps = {a.name: a for a in schema.applications}
    assert sorted(apps) == ["pumpfleet", "pumpfleet-staging"]
    assert (
        apps["pumpfleet"].route_prefix == "/"
        and apps["pumpfleet-staging"].route_prefix == "/staging"
    )
    assert schema.http_options.host == "127.0.0.1"  # loopback unless the operator says so
    for app in apps.values():
        assert app.import_path == "serve_apps.scoring:build_app"
        ScoringConfig(**app.args)
    assert ScoringConfig(**apps["pumpfleet-staging"].args).stage == "staging"


def test_the_import_path_builds_the_app_from_its_typed_argument() -> None:
    """`serve run serve_apps.scoring:build_app key=value ...` validates its arguments
    into ScoringConfig by the builder's annotation."""
    import inspect

    from serve_apps.scoring import build_app

    (arg,) = inspect.signature(build_app).parameters.values()
    assert arg.annotation is ScoringConfig


def test_production_serves_champion_and_challenger_staging_its_own_alias() -> None:
    prod = ScoringConfig(tracking_uri="sqlite:///x", predictions_dir="p")
    assert prod.aliases() == {Arm.CHAMPION: CHAMPION, Arm.CHALLENGER: CHALLENGER}
    staging = prod.model_copy(update={"stage": "staging"})
    assert staging.aliases() == {Arm.CHAMPION: STAGING}


@pytest.mark.parametrize(
    "bad",
    [{"stage": "canary"}, {"refresh_seconds": 0}, {"challenger_weight": 1.5}, {"api_keys": ["x"]}],
)
def test_a_bad_app_argument_is_refused_by_name(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError, match=next(iter(bad))):
        ScoringConfig(tracking_uri="sqlite:///x", predictions_dir="p", **bad)
