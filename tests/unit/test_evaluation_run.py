"""The evaluate job's decision path without Ray, on a real MLflow (SQLite in a temp
folder) and the hand-written snapshot of ``test_lifecycle``: the cases the gates do not
decide (automatic promotion off, a challenger that is already champion, nothing to
evaluate), the size gate, and what each decision leaves in the registry."""

from __future__ import annotations

from datetime import timedelta

import pytest

from pumpfleet import lifecycle
from pumpfleet.errors import RegistryError
from pumpfleet.evaluation_run import evaluate_class, promote_version, run_evaluate
from pumpfleet.promotion import PromotionPolicy
from pumpfleet.registry import CHAMPION, Registry
from pumpfleet.settings import Settings
from pumpfleet.snapshot import open_snapshot
from tests.unit.test_lifecycle import HOLDOUT_RUL, NAME, T0, register, ws

__all__ = ["ws"]  # the fixture, shared with test_lifecycle

Workspace = tuple[Settings, Registry]


def test_passing_the_gates_with_promotion_off_keeps_the_challenger(ws: Workspace) -> None:
    settings, reg = ws
    v = register(reg, HOLDOUT_RUL)
    snap = open_snapshot(str(settings.features_dir), "latest")
    r = evaluate_class(reg, snap, "esp", PromotionPolicy(), "bob", T0, promote=False)
    assert not r["promoted"] and r["champion"] is None and r["champion_before"] is None
    assert r["reason"].startswith("passed the gates; kept as challenger (automatic promotion off)")
    assert all(not line.startswith("FAIL") for line in r["reasons"])
    tags = reg.version_tags(NAME, v)
    assert (tags["eval.decision"], tags["eval.snapshot"]) == ("kept", "snap1")
    assert tags["eval.mlflow_run_id"] == r["mlflow_run_id"]
    run = reg.client.get_run(r["mlflow_run_id"])
    assert run.data.tags["decision"] == "reject" and run.data.metrics["promoted"] == 0.0
    # kept out of production, and the trail says why
    (record,) = lifecycle.history(reg, "esp")
    assert (record.action, record.version, record.who) == ("reject", v, "bob")


def test_a_challenger_that_is_already_champion_is_left_alone(ws: Workspace) -> None:
    settings, reg = ws
    v = register(reg, HOLDOUT_RUL)
    assert run_evaluate(settings, who="bob", now=T0)["classes"]["esp"]["promoted"]
    again = run_evaluate(settings, who="bob", now=T0 + timedelta(hours=1))["classes"]["esp"]
    assert not again["promoted"] and again["reason"] == "challenger is already champion"
    assert again["champion_before"] == again["champion"] == v
    assert again["champion_report"] is None  # compared with the baseline, as a first model
    assert [r.action for r in lifecycle.history(reg, "esp")] == ["promote"]  # nothing new


def test_a_gate_that_fails_keeps_the_champion(ws: Workspace) -> None:
    settings, reg = ws
    register(reg, HOLDOUT_RUL)
    tiny = PromotionPolicy(max_size_bytes=10)
    r = run_evaluate(settings, policy=tiny, who="bob", now=T0)
    esp = r["classes"]["esp"]
    assert not esp["promoted"] and reg.version_by_alias(NAME, CHAMPION) is None
    assert any(line.startswith("FAIL size") for line in esp["reasons"])
    parent = reg.client.get_run(r["mlflow_run_id"])
    assert parent.data.metrics["esp.promoted"] == 0.0
    assert parent.data.params["max_size_bytes"] == "10"


def test_nothing_to_evaluate_is_one_clear_error(ws: Workspace) -> None:
    settings, _ = ws
    with pytest.raises(RegistryError, match="no challenger to evaluate"):
        run_evaluate(settings)


def test_manual_promotion_through_the_gates_or_forced(ws: Workspace) -> None:
    settings, reg = ws
    good = register(reg, HOLDOUT_RUL)
    first = promote_version(settings, "esp", good, who="carol", now=T0)
    assert first["promoted"] and not first["forced"] and first["champion_before"] is None
    worse = register(reg, 80.0)
    gated = promote_version(settings, "esp", worse, who="carol", now=T0)
    assert not gated["promoted"] and reg.version_by_alias(NAME, CHAMPION) == good
    forced = promote_version(
        settings, "esp", worse, force=True, reason="site fix", who="carol", now=T0
    )
    assert forced == {
        "class": "esp",
        "version": worse,
        "champion_before": good,
        "promoted": True,
        "forced": True,
        "reasons": [],
        "reason": "site fix",
    }
    assert reg.version_by_alias(NAME, CHAMPION) == worse
