"""The retrain's orchestration without Ray: the Ray steps (ingest, the two searches) are
fakes that record what they were asked, the gates and the registry are real (MLflow on
SQLite, the hand-written snapshot of ``test_lifecycle``)."""

from __future__ import annotations

from typing import Any

import pytest

from pumpfleet.errors import DataError, RegistryError
from pumpfleet.job_options import RetrainOptions
from pumpfleet.registry import CHAMPION, Registry
from pumpfleet.retraining import RetrainSteps, retrain_with, run_retrain
from pumpfleet.routing import WEIGHT_TAG
from pumpfleet.search_space import AnomalySearchSpace, SearchSpace
from pumpfleet.settings import Settings
from pumpfleet.windows import WindowConfig
from tests.unit.test_lifecycle import HOLDOUT_RUL, NAME, register, register_anomaly, ws

__all__ = ["ws"]  # the fixture, shared with test_lifecycle

Workspace = tuple[Settings, Registry]


class FakeSteps:
    """Ray's steps as the retrain calls them: each records its arguments; training
    registers a challenger that predicts ``rul`` hours."""

    def __init__(self, reg: Registry, rul: float = HOLDOUT_RUL, health: Exception | None = None):
        self.reg, self.rul, self.health = reg, rul, health
        self.calls: list[tuple[str, Any]] = []

    def ingest(self, settings: Settings, source: str, root: str, cfg: WindowConfig) -> Any:
        self.calls.append(("ingest", (source, root, cfg)))
        return {"snapshot_id": "snap1", "up_to_date": True}

    def train(
        self, settings: Settings, snapshot: str, space: Any, classes: list[str] | None
    ) -> Any:
        self.calls.append(("train", (snapshot, space, classes)))
        register(self.reg, self.rul)
        return {"classes": {"esp": {}}, "failed_trials": {"esp": 0}}

    def train_anomaly(
        self, settings: Settings, snapshot: str, space: Any, classes: Any, promote: bool
    ) -> Any:
        self.calls.append(("train_anomaly", (snapshot, space, classes, promote)))
        if self.health is not None:
            raise self.health
        return {"classes": {"esp": {"version": "2", "registered": True, "threshold": 1.0}}}

    def steps(self) -> RetrainSteps:
        return RetrainSteps(self.ingest, self.train, self.train_anomaly)


def test_a_retrain_ingests_trains_gates_and_keeps_its_challenger(ws: Workspace) -> None:
    settings, reg = ws
    fake = FakeSteps(reg)
    space = SearchSpace(epochs=2)
    out = run_retrain(settings, fake.steps(), ["esp"], space, reason="drift on esp", ab_weight=0.25)
    assert [name for name, _ in fake.calls] == ["ingest", "train"]  # no health model yet
    source, root, cfg = fake.calls[0][1]
    assert (source, root, cfg) == (
        str(settings.data_dir),
        str(settings.features_dir),
        WindowConfig(),
    )
    assert fake.calls[1][1] == ("snap1", space, ["esp"])
    esp = out["classes"]["esp"]
    assert esp["reason"].startswith("passed the gates; kept as challenger")
    assert not esp["promoted"] and esp["champion"] is None
    assert reg.version_by_alias(NAME, CHAMPION) is None
    assert out["reason"] == "drift on esp" and out["snapshot_id"] == "snap1"
    assert not out["new_snapshot"] and out["health"] == {}
    assert out["failed_trials"] == {"esp": 0}
    # the online test of the new challenger, as asked
    assert out["online_test"] == {"esp": {WEIGHT_TAG: "0.25"}}
    assert reg.model_state(NAME)[1][WEIGHT_TAG] == "0.25"


def test_with_promote_the_gates_decide(ws: Workspace) -> None:
    settings, reg = ws
    out = run_retrain(settings, FakeSteps(reg).steps(), promote=True, ab_weight=0.5)
    esp = out["classes"]["esp"]
    assert esp["promoted"] and esp["champion"] == esp["challenger"]
    assert out["online_test"] == {}  # the champion is not tested against itself


def test_a_class_with_a_health_model_gets_a_new_one(ws: Workspace) -> None:
    settings, reg = ws
    register_anomaly(reg)
    fake = FakeSteps(reg)
    health = AnomalySearchSpace(epochs=1)
    out = run_retrain(settings, fake.steps(), ["esp"], health_space=health)
    assert fake.calls[-1] == ("train_anomaly", ("snap1", health, ["esp"], False))
    assert out["health"] == {"esp": {"version": "2", "registered": True, "threshold": 1.0}}
    # too few normal windows: the class keeps its health model, the RUL retrain stands
    short = FakeSteps(reg, health=DataError("no class has enough windows of normal operation"))
    out = run_retrain(settings, short.steps(), ["esp"])
    assert out["health"] == {
        "esp": {"registered": False, "gate": "no class has enough windows of normal operation"}
    }
    assert out["classes"]["esp"]["challenger"]
    assert run_retrain(settings, FakeSteps(reg).steps(), health=False)["health"] == {}


def test_nothing_trained_is_an_error(ws: Workspace) -> None:
    settings, reg = ws

    class Untrained(FakeSteps):
        def train(self, *args: Any) -> Any:
            return {"classes": {}}

    with pytest.raises(RegistryError, match="no challenger was trained"):
        run_retrain(settings, Untrained(reg).steps())


def test_the_options_arrive_and_are_echoed(ws: Workspace) -> None:
    settings, reg = ws
    fake = FakeSteps(reg)
    options = RetrainOptions(classes=["esp"], reason="scheduled", epochs=3, seed=7, no_health=True)
    out = retrain_with(settings, fake.steps(), options)
    _, (_, space, classes) = fake.calls[1]
    assert (space.epochs, space.seed, classes) == (3, 7, ["esp"])
    assert out["options"] == options.model_dump() and out["reason"] == "scheduled"
