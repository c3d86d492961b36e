"""The models a replica serves: per pump class, the model behind each arm's alias, the
class's health model and its A/B split, loaded from the registry and refreshed from it;
and the routing of a pump to an arm.

Everything the registry is asked goes through :class:`ModelSource` (what
:class:`pumpfleet.registry.Registry` offers), so a fake stands in for it in tests: no
Ray, no MLflow here.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from pumpfleet.errors import RegistryError
from pumpfleet.features import FeatureSpec
from pumpfleet.registry import CHAMPION, anomaly_model_name, model_name
from pumpfleet.routing import SHADOW_TAG, WEIGHT_TAG, Arm, assign_arm, split_tags
from pumpfleet.runtime import Runner
from pumpfleet.scoring import HealthModel
from serve_apps.errors import InvalidFields

log = logging.getLogger(__name__)


class Loaded(Protocol):
    """A model version as the registry hands it over (:class:`LoadedModel`)."""

    @property
    def version(self) -> str: ...
    @property
    def spec(self) -> FeatureSpec: ...
    def runner(self) -> Runner: ...
    def health_model(self) -> HealthModel: ...


class ModelSource(Protocol):
    """What the model set asks of the registry."""

    def classes_by_kind(self) -> tuple[list[str], list[str]]: ...
    def model_state(self, name: str) -> tuple[dict[str, str], dict[str, str]]: ...
    def version_by_alias(self, name: str, alias: str) -> str | None: ...
    def load_version(self, name: str, version: str) -> Loaded: ...
    def set_model_tags(self, name: str, tags: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class ServedModel:
    """One arm's model, ready to score."""

    version: str
    spec: FeatureSpec
    run: Runner


@dataclass
class ServedClass:
    """One class's models and its A/B settings."""

    arms: dict[Arm, ServedModel]
    weight: float
    shadow: bool = False
    health: HealthModel | None = None
    # the weight is saved on the registered model (it wins over the configured default)
    weight_saved: bool = False

    def arm_for(self, pump_id: str, salt: str) -> Arm:
        """The arm that answers for ``pump_id``: sticky by pump (``assign_arm``); the
        champion in shadow mode (the challenger then scores off the response path) or
        when the class has no challenger."""
        if self.shadow:
            return Arm.CHAMPION
        arm = assign_arm(pump_id, self.weight, salt)
        return arm if arm in self.arms else Arm.CHAMPION

    def shadow_model(self) -> ServedModel | None:
        """The challenger that scores beside the champion, in shadow mode."""
        return self.arms.get(Arm.CHALLENGER) if self.shadow else None


def split_from_tags(tags: Mapping[str, str], weight: float, shadow: bool) -> tuple[float, bool]:
    """The split the registered model's tags set, ``weight`` and ``shadow`` where they
    say nothing; a weight tag that is not a number is ignored (and said so)."""
    try:
        weight = min(1.0, max(0.0, float(tags.get(WEIGHT_TAG, weight))))
    except ValueError:
        log.warning("ignoring the unreadable tag %s=%r", WEIGHT_TAG, tags[WEIGHT_TAG])
    return weight, tags.get(SHADOW_TAG, str(shadow)).lower() == "true"


def _readable(weight: str | None) -> bool:
    """Whether a weight tag is a number (split_from_tags ignores one that is not)."""
    if weight is None:
        return False
    try:
        float(weight)
    except ValueError:
        return False
    return True


class ModelSet:
    """Per class, the model of each arm (``aliases``: arm → registry alias), its health
    model and its split. :meth:`refresh` swaps a new set in at once, so a request in
    flight finishes on the models it started with; readers take :attr:`classes` once."""

    def __init__(
        self, source: ModelSource, aliases: Mapping[Arm, str], weight: float, salt: str
    ) -> None:
        self.source = source
        self.aliases = dict(aliases)
        self.weight = weight  # a class's challenger weight until its tags say otherwise
        self.salt = salt
        self.classes: dict[str, ServedClass] = {}
        self._lock = threading.Lock()  # one refresh or split change at a time

    def refresh(self) -> dict[str, dict[str, str]]:
        """(Re)load every class's models by alias and its split from the registry; a
        model that is unchanged is kept, one that cannot be loaded leaves the old one
        serving, and a class with no champion is not served. Returns :meth:`versions`."""
        with self._lock:
            loaded: dict[str, ServedClass] = {}
            classes, with_health = self.source.classes_by_kind()  # one request
            for cls in classes:
                aliases, tags = self.source.model_state(model_name(cls))
                old = self.classes.get(cls)
                arms = self._arms(cls, aliases, old)
                if Arm.CHAMPION not in arms:
                    continue
                health = self._health(cls, old) if cls in with_health else None
                before = (self.weight, False) if old is None else (old.weight, old.shadow)
                weight, shadow = split_from_tags(tags, *before)
                saved = _readable(tags.get(WEIGHT_TAG)) or (
                    old is not None and old.weight_saved and WEIGHT_TAG in tags
                )
                loaded[cls] = ServedClass(arms, weight, shadow, health, saved)
            self.classes = loaded
            return self.versions()

    def _arms(
        self, cls: str, aliases: Mapping[str, str], old: ServedClass | None
    ) -> dict[Arm, ServedModel]:
        arms: dict[Arm, ServedModel] = {}
        for arm, alias in self.aliases.items():
            version = aliases.get(alias)
            if version is None:
                continue
            kept = old.arms.get(arm) if old is not None else None
            if kept is not None and kept.version == version:
                arms[arm] = kept  # unchanged: keep the loaded session
                continue
            try:
                m = self.source.load_version(model_name(cls), version)
                arms[arm] = ServedModel(m.version, m.spec, m.runner())
            except (RegistryError, OSError, ValueError) as e:
                log.error("%s v%s could not be loaded: %s", cls, version, e)
                if kept is not None:
                    arms[arm] = kept
        return arms

    def _health(self, cls: str, old: ServedClass | None) -> HealthModel | None:
        """The class's health model at ``champion`` (the loaded one if unchanged; the old
        one if the new one cannot be loaded)."""
        name = anomaly_model_name(cls)
        before = old.health if old is not None else None
        version = self.source.version_by_alias(name, CHAMPION)
        if version is None:
            return None
        if before is not None and before.version == version:
            return before
        try:
            return self.source.load_version(name, version).health_model()
        except (RegistryError, OSError, ValueError, KeyError) as e:
            log.error("%s v%s could not be loaded: %s", name, version, e)
            return before

    def set_split(
        self, pump_class: str | None, weight: float | None, shadow: bool | None
    ) -> dict[str, dict[str, Any]]:
        """Set the challenger's weight and shadow mode of one class (all when None), on
        the registered model, where every replica reads it, and here at once. Returns
        every class's split."""
        if pump_class is not None and pump_class not in self.classes:
            raise InvalidFields.at("pump_class", "unknown or unserved class")
        tags = split_tags(weight, shadow)
        with self._lock:
            for cls in [pump_class] if pump_class else list(self.classes):
                self.source.set_model_tags(model_name(cls), tags)
                c = self.classes[cls]
                if weight is not None:
                    c.weight, c.weight_saved = weight, True
                if shadow is not None:
                    c.shadow = shadow
        return {
            cls: {"challenger_weight": c.weight, "shadow": c.shadow}
            for cls, c in self.classes.items()
        }

    def versions(self) -> dict[str, dict[str, str]]:
        """The version serving each class and arm."""
        return {
            cls: {str(a): m.version for a, m in c.arms.items()} for cls, c in self.classes.items()
        }

    def listing(self) -> dict[str, dict[str, Any]]:
        """Each class's versions, split and health model, as ``/v1/models`` lists them."""
        return {
            cls: {
                **{str(a): m.version for a, m in c.arms.items()},
                "challenger_weight": c.weight,
                "shadow": c.shadow,
                "weight_saved": c.weight_saved,
                "anomaly": c.health.version if c.health else None,
            }
            for cls, c in self.classes.items()
        }
