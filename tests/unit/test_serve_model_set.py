"""The Serve replica's model set against a fake registry: loading, refreshing, split tags
and routing, with no Ray and no MLflow."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from pumpfleet.errors import RegistryError
from pumpfleet.features import FeatureSpec
from pumpfleet.health import calibrate
from pumpfleet.registry import CHALLENGER, CHAMPION, STAGING, anomaly_model_name, model_name
from pumpfleet.routing import SHADOW_TAG, WEIGHT_TAG, Arm, assign_arm
from pumpfleet.runtime import Runner
from pumpfleet.scoring import HealthModel
from serve_apps.errors import InvalidFields
from serve_apps.model_set import ModelSet, ServedClass, ServedModel, split_from_tags

SALT = "salt"
PRODUCTION = {Arm.CHAMPION: CHAMPION, Arm.CHALLENGER: CHALLENGER}


def spec(cls: str = "esp") -> FeatureSpec:
    return FeatureSpec(
        pump_class=cls,
        channels=["motor_temp", "flow"],
        window=4,
        stride=1,
        interval_seconds=3600,
        rul_cap_hours=100.0,
        horizon_hours=24.0,
        mean=[80.0, 1000.0],
        std=[10.0, 100.0],
    )


def runner(x: np.ndarray) -> np.ndarray:
    return np.full((len(x), 2), 0.5)


@dataclass
class FakeModel:
    """A registered version, as Registry.load_version hands it over."""

    version: str
    spec: FeatureSpec

    def runner(self) -> Runner:
        return runner

    def health_model(self) -> HealthModel:
        health = calibrate(np.linspace(0.1, 1.0, 50), "conv_ae", target_far=0.05)
        return HealthModel(self.version, self.spec, health, lambda x: np.ones((len(x), 1)))


@dataclass
class FakeRegistry:
    """Registered models by name: aliases and tags; versions that fail to load."""

    aliases: dict[str, dict[str, str]] = field(default_factory=dict)
    tags: dict[str, dict[str, str]] = field(default_factory=dict)
    broken: set[tuple[str, str]] = field(default_factory=set)
    loads: list[tuple[str, str]] = field(default_factory=list)

    def classes_by_kind(self) -> tuple[list[str], list[str]]:
        names = [n.removeprefix("pumpfleet-") for n in self.aliases]
        rul = sorted(n for n in names if not n.endswith("-anomaly"))
        return rul, sorted(n.removesuffix("-anomaly") for n in names if n.endswith("-anomaly"))

    def model_state(self, name: str) -> tuple[dict[str, str], dict[str, str]]:
        return dict(self.aliases.get(name, {})), dict(self.tags.get(name, {}))

    def version_by_alias(self, name: str, alias: str) -> str | None:
        return self.aliases.get(name, {}).get(alias)

    def load_version(self, name: str, version: str) -> FakeModel:
        self.loads.append((name, version))
        if (name, version) in self.broken:
            raise RegistryError(f"{name} v{version}: artifacts gone")
        return FakeModel(version, spec(name.removeprefix("pumpfleet-").split("-")[0]))

    def set_model_tags(self, name: str, tags: dict[str, Any]) -> None:
        self.tags.setdefault(name, {}).update({k: str(v) for k, v in tags.items()})


def registry(**classes: dict[str, str]) -> FakeRegistry:
    return FakeRegistry(aliases={model_name(c): dict(a) for c, a in classes.items()})


def model_set(reg: FakeRegistry, aliases: dict[Arm, str] | None = None) -> ModelSet:
    return ModelSet(reg, aliases or PRODUCTION, weight=0.2, salt=SALT)


def test_each_class_serves_the_versions_behind_its_aliases() -> None:
    reg = registry(esp={CHAMPION: "3", CHALLENGER: "4"}, rod={CHAMPION: "1"})
    models = model_set(reg)
    assert models.refresh() == {
        "esp": {"champion": "3", "challenger": "4"},
        "rod": {"champion": "1"},
    }
    listed = models.listing()
    assert listed["esp"] == {
        "champion": "3", "challenger": "4", "challenger_weight": 0.2, "shadow": False,
        "weight_saved": False, "anomaly": None,
    }  # fmt: skip


def test_unchanged_versions_keep_their_loaded_model() -> None:
    reg = registry(esp={CHAMPION: "3", CHALLENGER: "4"})
    models = model_set(reg)
    models.refresh()
    before = models.classes["esp"].arms
    reg.aliases[model_name("esp")][CHALLENGER] = "5"  # only the challenger moves
    models.refresh()
    after = models.classes["esp"].arms
    assert after[Arm.CHAMPION] is before[Arm.CHAMPION]
    assert after[Arm.CHALLENGER] is not before[Arm.CHALLENGER]
    assert after[Arm.CHALLENGER].version == "5"
    assert reg.loads == [(model_name("esp"), v) for v in ("3", "4", "5")]  # each loaded once


def test_a_model_that_fails_to_load_leaves_the_old_one_serving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reg = registry(esp={CHAMPION: "3"})
    models = model_set(reg)
    models.refresh()
    serving = models.classes["esp"].arms[Arm.CHAMPION]
    reg.aliases[model_name("esp")][CHAMPION] = "9"
    reg.broken.add((model_name("esp"), "9"))
    with caplog.at_level(logging.ERROR, logger="serve_apps.model_set"):
        assert models.refresh() == {"esp": {"champion": "3"}}
    assert models.classes["esp"].arms[Arm.CHAMPION] is serving
    assert "v9 could not be loaded" in caplog.text
    reg.broken.clear()  # the next refresh tries again
    assert models.refresh() == {"esp": {"champion": "9"}}


def test_a_new_class_that_fails_to_load_is_not_served() -> None:
    reg = registry(esp={CHAMPION: "3"})
    reg.broken.add((model_name("esp"), "3"))
    models = model_set(reg)
    assert models.refresh() == {} and models.classes == {}


def test_a_class_without_a_champion_is_not_served() -> None:
    reg = registry(esp={CHAMPION: "3"}, rod={CHALLENGER: "2"}, pcp={})
    models = model_set(reg)
    assert sorted(models.refresh()) == ["esp"]
    del reg.aliases[model_name("esp")][CHAMPION]  # a rollback that removed the alias
    assert models.refresh() == {}


def test_staging_serves_its_own_alias_as_the_only_arm() -> None:
    reg = registry(esp={CHAMPION: "3", CHALLENGER: "4", STAGING: "5"}, rod={CHAMPION: "1"})
    models = model_set(reg, {Arm.CHAMPION: STAGING})
    assert models.refresh() == {"esp": {"champion": "5"}}


def test_split_tags_are_read_and_an_unreadable_weight_is_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reg = registry(esp={CHAMPION: "3", CHALLENGER: "4"}, rod={CHAMPION: "1", CHALLENGER: "2"})
    reg.tags[model_name("esp")] = {WEIGHT_TAG: "0.7", SHADOW_TAG: "true"}
    reg.tags[model_name("rod")] = {WEIGHT_TAG: "lots"}
    models = model_set(reg)
    with caplog.at_level(logging.WARNING, logger="serve_apps.model_set"):
        models.refresh()
    esp, rod = models.classes["esp"], models.classes["rod"]
    assert (esp.weight, esp.shadow, esp.weight_saved) == (0.7, True, True)
    # the configured weight stands, and /v1/models says it is not a saved one
    assert (rod.weight, rod.shadow, rod.weight_saved) == (0.2, False, False)
    assert f"ignoring the unreadable tag {WEIGHT_TAG}='lots'" in caplog.text
    # a weight set live survives a refresh that finds an unreadable tag
    models.set_split("rod", 0.9, None)
    reg.tags[model_name("rod")][WEIGHT_TAG] = "lots"
    models.refresh()
    assert (models.classes["rod"].weight, models.classes["rod"].weight_saved) == (0.9, True)
    assert models.listing()["rod"]["weight_saved"] is True


def test_split_from_tags_clips_and_defaults() -> None:
    assert split_from_tags({WEIGHT_TAG: "1.5"}, 0.2, False) == (1.0, False)
    assert split_from_tags({SHADOW_TAG: "True"}, 0.2, False) == (0.2, True)
    assert split_from_tags({}, 0.3, True) == (0.3, True)


def test_shadow_routes_every_pump_to_the_champion() -> None:
    arms = {
        Arm.CHAMPION: ServedModel("1", spec(), runner),
        Arm.CHALLENGER: ServedModel("2", spec(), runner),
    }
    pumps = [f"p{i}" for i in range(50)]
    live = ServedClass(dict(arms), weight=0.5)
    assert [live.arm_for(p, SALT) for p in pumps] == [assign_arm(p, 0.5, SALT) for p in pumps]
    assert {live.arm_for(p, SALT) for p in pumps} == {Arm.CHAMPION, Arm.CHALLENGER}
    assert live.shadow_model() is None
    shadow = ServedClass(dict(arms), weight=0.5, shadow=True)
    assert {shadow.arm_for(p, SALT) for p in pumps} == {Arm.CHAMPION}
    assert shadow.shadow_model() is arms[Arm.CHALLENGER]
    # no challenger: the champion answers whatever the weight says
    alone = ServedClass({Arm.CHAMPION: arms[Arm.CHAMPION]}, weight=1.0)
    assert {alone.arm_for(p, SALT) for p in pumps} == {Arm.CHAMPION}


def test_a_split_change_is_stored_on_the_registered_model_and_served_at_once() -> None:
    reg = registry(esp={CHAMPION: "3", CHALLENGER: "4"}, rod={CHAMPION: "1"})
    models = model_set(reg)
    models.refresh()
    out = models.set_split("esp", 0.0, True)
    assert out == {
        "esp": {"challenger_weight": 0.0, "shadow": True},
        "rod": {"challenger_weight": 0.2, "shadow": False},
    }
    assert reg.tags[model_name("esp")] == {WEIGHT_TAG: "0.0", SHADOW_TAG: "true"}
    assert model_name("rod") not in reg.tags
    models.set_split(None, 0.5, None)  # every class
    assert {reg.tags[model_name(c)][WEIGHT_TAG] for c in ("esp", "rod")} == {"0.5"}
    assert models.refresh() and models.classes["esp"].shadow is True  # read back as set
    with pytest.raises(InvalidFields) as e:
        models.set_split("submarine", 0.1, None)
    assert e.value.problems == [(["pump_class"], "unknown or unserved class")]


def test_the_health_model_comes_from_the_anomaly_champion() -> None:
    reg = registry(esp={CHAMPION: "3"}, rod={CHAMPION: "1"})
    reg.aliases[anomaly_model_name("esp")] = {CHAMPION: "7"}
    models = model_set(reg)
    models.refresh()
    health = models.classes["esp"].health
    assert health is not None and health.version == "7"
    assert models.classes["rod"].health is None
    assert models.listing()["esp"]["anomaly"] == "7"
    models.refresh()
    assert models.classes["esp"].health is health  # unchanged: kept
    reg.aliases[anomaly_model_name("esp")][CHAMPION] = "8"
    reg.broken.add((anomaly_model_name("esp"), "8"))
    models.refresh()
    assert models.classes["esp"].health is health  # cannot load the new one: the old serves
